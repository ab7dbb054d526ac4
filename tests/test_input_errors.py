"""Inputs that used to give silent garbage or a traceback: each is now a one-line error naming the value."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_model
from test_pipeline import _argv

from hadskip.checkpoint import load
from hadskip.cli import main
from hadskip.core.model import GatedModel
from hadskip.errors import CheckpointError


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_model_folder_without_its_tokenizer_is_refused(tmp_path, tiny_model_dir, glue_dir, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{name}", bare / name)
    err = _one_line_error(capsys, main(_argv(str(bare), glue_dir, tmp_path / "run", tmp_path / "cache")))
    assert f"model {str(bare)!r}: its tokenizer has 5 tokens" in err and "accepted: 100.." in err
    assert not (tmp_path / "run").exists()


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tmp_path, tiny_model_dir, glue_dir, capsys):
    small = tmp_path / "small"
    shutil.copytree(tiny_model_dir, small)
    config = json.loads((small / "config.json").read_text())
    config["vocab_size"] = 120
    (small / "config.json").write_text(json.dumps(config))
    err = _one_line_error(capsys, main(_argv(str(small), glue_dir, tmp_path / "run", tmp_path / "cache")))
    assert "but the model's vocabulary 120; accepted: 100..120 tokens" in err


def test_a_checkpoint_whose_config_disagrees_on_the_layer_count_is_refused(tmp_path):
    GatedModel(tiny_model("bert", layers=4)).save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["num_hidden_layers"] = 2
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="num_hidden_layers=2 but hadskip.json has num_layers=4"):
        load(tmp_path / "ckpt")


def test_an_empty_budget_item_is_an_error(tmp_path, tiny_model_dir, glue_dir, capsys):
    argv = _argv(tiny_model_dir, glue_dir, tmp_path / "run", tmp_path / "cache", "--budgets", "3,,1.5")
    err = _one_line_error(capsys, main(argv))
    assert "--budgets '3,,1.5' must be a comma list of layer counts" in err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tolerance", "nan"], "--tolerance nan:"),
        (["--cpus-per-worker", "0"], "--cpus-per-worker 0.0: Input should be greater than 0"),
        (["--smoke-test", "--cpus-per-worker", "0"], "--cpus-per-worker 0.0: Input should be greater than 0"),
        (["--gpus-per-worker", "nan"], "--gpus-per-worker nan:"),
        (["--budgets", "3,,1.5"], "--budgets '3,,1.5' must be a comma list"),
    ],
)
def test_sweep_values_that_meant_nothing_are_errors(tmp_path, glue_dir, capsys, monkeypatch, extra, message):
    import hadskip.sweep.driver
    from hadskip.cli.sweep import main as sweep_main

    def no_sweep(*args, **kwargs):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(hadskip.sweep.driver, "run_sweep", no_sweep)
    argv = ["--tasks", "cola", "--data-dir", str(glue_dir), "--results", str(tmp_path / "r"), *extra]
    err = _one_line_error(capsys, sweep_main(argv))
    assert message in err


def test_tasks_all_names_the_tasks_it_leaves_out(tmp_path, caplog):
    from conftest import write_synthetic_glue

    from hadskip.sweep.settings import resolve_tasks

    glue = write_synthetic_glue(tmp_path / "glue", rows=8)  # QNLI: a dev split and no train split
    with caplog.at_level("WARNING"):
        assert resolve_tasks("all", str(glue)) == ["cola", "sst2", "mrpc"]
    assert "leaving out qnli (no train split)" in caplog.text
