"""What `hadskip train` does to --output: nothing before every input check passes, and an --overwrite that
replaces the earlier run only once the new one has a row."""

from __future__ import annotations

import pytest
from test_pipeline import _argv

import hadskip.run.train
from hadskip.cli import main
from hadskip.results import read_results


def _earlier_run(out):
    (out / "checkpoints" / "budget-3").mkdir(parents=True)
    (out / "checkpoints" / "budget-3" / "model.safetensors").write_bytes(b"weights")
    (out / "results.parquet").write_bytes(b"precious")
    (out / "state.json").write_text("{}")
    (out / "config.json").write_text("{}")


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_overwrite_with_a_bad_data_dir_keeps_the_earlier_run(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "run"
    _earlier_run(out)
    before = _files(out)
    argv = _argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--overwrite")
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "typo")
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _files(out) == before and (out / "results.parquet").read_bytes() == b"precious"


def test_a_failed_check_leaves_a_fresh_output_untouched(tmp_path, tiny_model_dir, glue_dir):
    out = tmp_path / "fresh"
    argv = _argv(tiny_model_dir, glue_dir, out, tmp_path / "cache")
    argv[argv.index("--data-dir") + 1] = str(tmp_path / "typo")
    assert main(argv) == 2
    assert not out.exists()


def test_overwrite_that_fails_before_its_first_row_restores_the_earlier_run(
    tmp_path, tiny_model_dir, glue_dir, monkeypatch
):
    out = tmp_path / "run"
    _earlier_run(out)
    before = _files(out)

    def broken_stage1(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(hadskip.run.train, "ensure_stage1", broken_stage1)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--overwrite"))
    assert _files(out) == before and (out / "results.parquet").read_bytes() == b"precious"
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="out of memory"):
        main(_argv(tiny_model_dir, glue_dir, fresh, tmp_path / "cache"))
    assert not (fresh / "config.json").exists()


def test_overwrite_replaces_the_earlier_run_at_its_first_row(tmp_path, tiny_model_dir, glue_dir, monkeypatch):
    out = tmp_path / "run"
    _earlier_run(out)
    seen = []
    real_train = hadskip.run.train.train_run

    def stop_after_the_full_row(*args, **kwargs):
        def on_point(row, ckpt):
            seen.append(_files(out))
            raise KeyboardInterrupt

        return real_train(*args, **kwargs, on_point=on_point)

    monkeypatch.setattr(hadskip.run.train, "train_run", stop_after_the_full_row)
    assert main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--overwrite")) == 130
    # at the first row the earlier files are gone (none hidden either), the new row and settings are there
    assert seen == [["config.json", "results.parquet", "state.json"]]
    assert read_results(out / "results.parquet")["method"].tolist() == ["full"]


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, tiny_model_dir, glue_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "fresh", empty):
        assert main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--resume")) == 2
        err = capsys.readouterr().err.strip()
        assert f"--resume: nothing to resume in {out}" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "fresh").exists() and not any(empty.iterdir())


def test_resume_without_state_says_the_run_cannot_be_resumed(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.parquet").write_bytes(b"precious")
    assert main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert f"{out} cannot be resumed (no state.json" in err and "--resume to" not in err
    assert (out / "results.parquet").read_bytes() == b"precious"
