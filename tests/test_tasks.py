"""Loading GLUE splits: the real shared TSV files, Parquet, and malformed input."""

from __future__ import annotations

import numpy as np
import pytest

from hadskip.data.tasks import Split, available_tasks, canonical_task, hold_out, load_split, subsample
from hadskip.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "task,split,rows,counts",
    [
        ("cola", "train", 8551, [2528, 6023]),
        ("cola", "dev", 1043, [322, 721]),
        ("mrpc", "train", 3668, [1194, 2474]),
        ("mrpc", "dev", 408, [129, 279]),
        ("sst2", "train", 67349, [29780, 37569]),
        ("sst2", "dev", 872, [428, 444]),
        ("qnli", "dev", 5463, [2702, 2761]),
    ],
)
def test_real_glue_files(real_glue_dir, task, split, rows, counts):
    s = load_split(task, split, real_glue_dir)
    assert len(s) == rows and np.bincount(s.labels).tolist() == counts
    assert all(isinstance(t, str) and t for t in s.text_a[:50])


def test_real_file_details(real_glue_dir):
    glue_dir = real_glue_dir
    cola = load_split("cola", "train", glue_dir)  # no header: the first sentence is data
    assert cola.text_a[0].startswith("Our friends won't buy this analysis") and cola.text_b is None
    mrpc = load_split("mrpc", "dev", glue_dir)  # BOM stripped, pairs kept, stray quotes kept
    assert mrpc.text_a[0].startswith("He said the foodservice pie")
    assert mrpc.text_b[0].startswith('"The foodservice pie business')
    qnli = load_split("qnli", "dev", glue_dir)  # text labels mapped to the hub's ids
    assert qnli.labels[0] == 0 and qnli.labels[1] == 1


def test_synthetic_glue_files_read_like_the_real_ones(tmp_path):
    from conftest import write_synthetic_glue

    root = write_synthetic_glue(tmp_path, rows=40)
    assert available_tasks(root) == ["cola", "sst2", "mrpc"]
    for task in ("cola", "sst2", "mrpc"):
        s = load_split(task, "train", root)
        assert len(s) == 40 and set(s.labels.tolist()) == {0, 1}
    assert load_split("mrpc", "dev", root).text_b is not None and len(load_split("qnli", "dev", root)) == 20


def test_available_tasks_are_those_with_train_and_dev(glue_dir):
    assert available_tasks(glue_dir) == ["cola", "sst2", "mrpc"]


def test_task_folder_may_be_given_directly(glue_dir):
    assert len(load_split("mrpc", "dev", glue_dir / "MRPC")) == len(load_split("mrpc", "dev", glue_dir))


def test_task_names_and_aliases():
    assert canonical_task("SST-2") == "sst2" and canonical_task("CoLA") == "cola"
    with pytest.raises(ConfigError, match="unknown task 'glue'; accepted: cola, sst2"):
        canonical_task("glue")


def test_missing_split_names_the_expected_file(tmp_path):
    (tmp_path / "RTE").mkdir()
    with pytest.raises(DataError, match=r"no train split for rte: looked for .*RTE/train.tsv"):
        load_split("rte", "train", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_split("rte", "train", tmp_path / "nope")


def test_malformed_rows_name_file_and_line(tmp_path):
    d = tmp_path / "RTE"
    d.mkdir()
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(DataError, match=r"RTE/train.tsv line 3: expected 4 tab-separated fields, got 2"):
        load_split("rte", "train", tmp_path)
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"line 2: label 'maybe' is not one of entailment, not_entailment"):
        load_split("rte", "train", tmp_path)
    (d / "train.tsv").write_text("index\tfirst\tsecond\tlabel\n")
    with pytest.raises(DataError, match="header lacks column 'sentence1'"):
        load_split("rte", "train", tmp_path)


def test_stsb_scores_are_floats(tmp_path):
    d = tmp_path / "STS-B"
    d.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (d / "dev.tsv").write_text(header + "0\tg\tf\t2012\t1\ts\ts\tA man.\tA person.\t3.8\n")
    s = load_split("stsb", "dev", tmp_path)
    assert s.labels.dtype == np.float32 and s.labels[0] == pytest.approx(3.8)


def test_parquet_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "MRPC"
    d.mkdir()
    pq.write_table(
        pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1, 0]}), d / "dev.parquet"
    )
    s = load_split("mrpc", "dev", tmp_path)
    assert s.text_b == ["c", "d"] and s.labels.tolist() == [1, 0]
    pq.write_table(pa.table({"sentence1": ["a"], "sentence2": ["c"], "label": [-1]}), d / "dev.parquet")
    with pytest.raises(DataError, match="labels must be 0..1"):
        load_split("mrpc", "dev", tmp_path)


def test_hub_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="pass --data-dir"):
        load_split("rte", "train", None)


def test_held_out_rows_are_drawn_before_subsampling_and_never_trained_on():
    split = Split([f"s{i}" for i in range(100)], None, np.arange(100) % 2, "train.tsv")
    rest, held = hold_out(split, 20, seed=3)
    assert len(held) == 20 and len(rest) == 80
    assert set(held.text_a).isdisjoint(rest.text_a) and set(held.text_a) | set(rest.text_a) == set(
        split.text_a
    )
    assert held.text_a == sorted(held.text_a, key=lambda t: int(t[1:]))  # original order kept
    assert hold_out(split, 20, seed=3)[1].text_a == held.text_a  # seeded
    assert hold_out(split, 20, seed=4)[1].text_a != held.text_a
    # train_limit subsamples what is left: any limit leaves the same held-out rows out of training
    for limit in (10, 50, None):
        assert set(subsample(rest, limit, seed=3).text_a).isdisjoint(held.text_a)
    assert hold_out(split, 0, seed=3) == (split, None)
    with pytest.raises(ConfigError, match=r"data.holdout_rows=100 leaves nothing to train on: .* at most 99"):
        hold_out(split, 100, seed=3)
