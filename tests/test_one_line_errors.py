"""Damaged inputs that used to end in a traceback: each is a one-line error naming the file or value."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_pipeline import _argv
from test_results import _row

from hadskip.cli import main
from hadskip.data.tasks import load_split
from hadskip.errors import DataError
from hadskip.results import ResultsError, read_results, write_point, write_table


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_binary_tsv_is_a_data_error_naming_the_file(tmp_path):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_bytes(b"src\t1\t\tok\n\xff\xfe\x00\x81garbage\t\x9c\n")
    with pytest.raises(DataError, match=r"CoLA/train.tsv: not UTF-8 text"):
        load_split("cola", "train", tmp_path)


def test_a_parquet_split_with_text_labels_is_a_data_error(tmp_path):
    (tmp_path / "MRPC").mkdir()
    table = pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": ["yes", "no"]})
    pq.write_table(table, tmp_path / "MRPC" / "dev.parquet")
    with pytest.raises(DataError, match=r"dev.parquet: row 0 has label 'yes'; labels must be 0..1"):
        load_split("mrpc", "dev", tmp_path)


def test_an_output_that_is_a_file_is_refused(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "out.txt"
    out.write_text("mine")
    err = _one_line_error(capsys, main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache")))
    assert f"--output {str(out)!r} cannot hold a run: it is an existing file" in err
    below = out / "run"
    err = _one_line_error(capsys, main(_argv(tiny_model_dir, glue_dir, below, tmp_path / "cache")))
    assert f"{out} is a file, not a folder" in err and out.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_output_in_a_read_only_folder_is_refused(tmp_path, tiny_model_dir, glue_dir, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    err = _one_line_error(capsys, main(_argv(tiny_model_dir, glue_dir, locked / "run", tmp_path / "cache")))
    assert "is not writable" in err


def test_a_report_out_that_is_a_file_is_refused(tmp_path, capsys):
    write_table([_row()], str(tmp_path / "results.parquet"))
    (tmp_path / "report").write_text("mine")
    code = main(["results", "report", str(tmp_path / "results.parquet"), "--out", str(tmp_path / "report")])
    assert "--out" in _one_line_error(capsys, code) and (tmp_path / "report").read_text() == "mine"


@pytest.mark.parametrize(
    "state,config,message",
    [
        (b'{"run_id": "r", "ro', b"{}", "state.json is damaged (JSONDecodeError"),
        (b"\xff\xfe\x00\x81", b"{}", "state.json is damaged"),
        (b'{"bogus": 1}', b"{}", "state.json is damaged (TypeError"),
        (b'["a"]', b"{}", "state.json is damaged (TypeError"),
        (b"{}", None, "config.json is missing"),
        (b"{}", b'{"seed": ', "config.json is damaged (JSONDecodeError"),
        (b"{}", b"[1]", "config.json is damaged"),
    ],
)
def test_resume_over_damaged_state_is_a_one_line_error(
    tmp_path, tiny_model_dir, glue_dir, capsys, state, config, message
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_bytes(state)
    if config is not None:
        (out / "config.json").write_bytes(config)
    code = main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--resume"))
    err = _one_line_error(capsys, code)
    assert message in err and "cannot be resumed" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["state.json"] + (["config.json"] if config else [])
    )


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--max-rows", "0"], "--max-rows 0 must be at least 1"),
        (["--threads", "-1"], "--threads -1 must be"),
        (["--dtype", "int8"], "--dtype 'int8' is not one of fp32, bf16, fp16"),
    ],
)
def test_bench_speed_refuses_counts_below_one(tmp_path, capsys, extra, message):
    code = main(["bench-speed", str(tmp_path / "ckpt"), "--task", "cola", *extra])
    assert message in _one_line_error(capsys, code)


def test_a_sweep_storage_that_is_a_file_is_refused(tmp_path, tiny_model_dir, glue_dir, capsys):
    from hadskip.cli.sweep import main as sweep_main

    (tmp_path / "state").write_text("mine")
    argv = ["--tasks", "cola", "--model", tiny_model_dir, "--data-dir", str(glue_dir), "--budgets", "2"]
    argv += ["--storage", str(tmp_path / "state"), "--results", str(tmp_path / "results")]
    err = _one_line_error(capsys, sweep_main(argv))
    assert f"--storage {str(tmp_path / 'state')!r} cannot be used: it is an existing file" in err


def test_a_foreign_parquet_file_beside_results_is_skipped_with_a_warning(tmp_path, caplog):
    good = _row()
    write_point(str(tmp_path / "results"), good, "trial-1")
    foreign = tmp_path / "results" / "notes.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    with caplog.at_level("WARNING"):
        df = read_results(tmp_path / "results")
    assert df["run_id"].tolist() == ["r1"]
    assert f"skipping {foreign}: not a hadskip results file" in caplog.text
    only = tmp_path / "only"
    only.mkdir()
    pq.write_table(pa.table({"x": [1]}), only / "a.parquet")
    with pytest.raises(ResultsError, match="none with the hadskip results columns"):
        read_results(only)
