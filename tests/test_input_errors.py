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
