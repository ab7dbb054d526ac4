"""The early-exit baselines as methods of `hadskip train`: each trains on a tiny model, exits by its rule at
its calibrated threshold, and lands in the results schema beside HadSkip."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_batch, tiny_model

from hadskip.baselines.exit_model import ExitModel
from hadskip.baselines.static import static_layers
from hadskip.baselines.training import exit_stage
from hadskip.checkpoint import load
from hadskip.cli import main
from hadskip.config import build_settings
from hadskip.errors import ConfigError
from hadskip.registry import EXIT_METHODS, METHODS
from hadskip.results import SCHEMA, read_results
from hadskip.sweep.settings import SweepSettings, trial_settings

FAST = [
    "--set",
    "data.train_limit=96",
    "--set",
    "data.dev_limit=64",
    "--set",
    "stage1.max_steps=4",
    "--set",
    "stage1.batch_size=16",
    "--set",
    "exits.max_steps=6",
    "--set",
    "exits.batch_size=16",
    "--set",
    "exits.calibration_rows=64",
    "--set",
    "data.max_length=48",
]


def _train(method, model_dir, glue_dir, tmp_path, *extra):
    out = tmp_path / method
    argv = [
        "-q",
        "train",
        "--task",
        "mrpc",
        "--method",
        method,
        "--model",
        model_dir,
        "--budgets",
        "3,1.5",
        "--output",
        str(out),
        "--data-dir",
        str(glue_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        *FAST,
        *extra,
    ]
    assert main(argv) == 0
    return out


@pytest.mark.parametrize("method", EXIT_METHODS)
def test_each_method_trains_and_writes_rows_of_the_schema(method, tmp_path, tiny_model_dir, glue_dir):
    out = _train(method, tiny_model_dir, glue_dir, tmp_path)
    assert pq.read_table(out / "results.parquet").schema.equals(SCHEMA, check_metadata=False)
    df = read_results(out / "results.parquet")
    assert df.method.tolist() == ["full", method, method] and df.budget.tolist() == [4.0, 3.0, 1.5]
    rows = df[df.method == method]
    assert (rows.status == "ok").all() and rows.beta.isna().all()
    for r in rows.itertuples():
        assert sum(r.layers_hist) == 64 and r.mean_layers == pytest.approx(
            sum(i * n for i, n in enumerate(r.layers_hist)) / 64
        )
        assert r.layers_hist[0] == 0  # every sequence runs at least its first layer
        model = load(r.checkpoint)
        assert isinstance(model, ExitModel) and model.method == method
        if method == "static":
            assert r.mean_layers == static_layers(r.budget, 4) and math.isnan(r.gate_threshold)
        else:  # the checkpoint exits at the threshold calibrated for its budget, recorded in the row
            assert model.threshold == pytest.approx(r.gate_threshold)
    ckpt = load(rows.checkpoint.iloc[0])
    pred = ckpt.predict(["the cat sat", "it rained"], ["a cat sat", "sunny"])
    assert len(pred["prediction"]) == 2 and all(1 <= len(x) <= 4 for x in pred["layers"])


def test_a_method_that_serves_every_budget_trains_once_and_resumes_without_retraining(
    tmp_path, tiny_model_dir, glue_dir, count_fits
):
    out = _train("pabee", tiny_model_dir, glue_dir, tmp_path)
    assert [kind for kind, _ in count_fits] == ["stage1", "exit"]  # one model, calibrated per budget
    first = read_results(out / "results.parquet")
    count_fits.clear()
    assert (
        main(
            [
                "-q",
                "train",
                "--task",
                "mrpc",
                "--method",
                "pabee",
                "--model",
                tiny_model_dir,
                "--budgets",
                "3,1.5",
                "--output",
                str(out),
                "--data-dir",
                str(glue_dir),
                "--cache-dir",
                str(tmp_path / "cache"),
                *FAST,
                "--resume",
            ]
        )
        == 0
    )
    assert count_fits == [] and len(read_results(out / "results.parquet")) == len(first)


def _batch(labels):
    ids, mask = tiny_batch(batch=len(labels))
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor(labels)}


@pytest.mark.parametrize("method", ["entropy", "pabee", "berxit", "leebert"])
def test_exit_losses_reach_what_each_method_trains(method):
    model = ExitModel(tiny_model("bert"), method, METHODS[method].rule).train()
    stage = exit_stage(METHODS[method], build_settings({}, []).exits)
    # step 3 is LeeBERT's cross-level step with cycle 4, and an even-numbered (joint) step for BERxiT
    terms = stage.loss(model, _batch([0, 1, 1, 0, 1, 0]), 3)
    terms["total"].backward()
    assert torch.isfinite(terms["total"])
    assert all(p.grad is not None for p in model.heads.parameters())
    assert (model.lte.weight.grad is not None) == (method == "berxit")
    assert (model.loss_logits.grad is not None) == (method == "leebert")


def test_berxit_alternates_between_the_last_exit_and_every_exit():
    model = ExitModel(tiny_model("bert"), "berxit", "lte").train()
    stage = exit_stage(METHODS["berxit"], build_settings({}, []).exits)
    torch.manual_seed(0)
    stage.loss(model, _batch([0, 1, 1, 0]), 0)["total"].backward()  # odd iteration: last exit only
    assert all(p.grad is None for p in model.heads.parameters())
    assert model.lte.weight.grad is not None  # J of the last layer
    model.zero_grad()
    stage.loss(model, _batch([0, 1, 1, 0]), 1)["total"].backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_leebert_learns_its_loss_weights_and_entropy_trains_only_its_heads(
    tmp_path, tiny_model_dir, glue_dir
):
    out = _train("leebert", tiny_model_dir, glue_dir, tmp_path, "--set", "exits.weight_lr=0.05")
    model = load(out / "checkpoints" / "budget-3")
    assert not torch.allclose(model.loss_logits, torch.zeros_like(model.loss_logits))
    out = _train("entropy", tiny_model_dir, glue_dir, tmp_path)
    stage1 = next((tmp_path / "cache" / "stage1").glob("mrpc-*/stage1.json")).parent
    with load(out / "checkpoints" / "budget-3").unwrapped() as hf:
        trained = hf.state_dict()
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(stage1).state_dict()
    assert all(torch.equal(trained[k], v) for k, v in base.items())  # DeeBERT's stage two: backbone frozen


def test_static_never_exceeds_its_budget():
    assert [static_layers(b, 6) for b in (4.5, 3.0, 1.5, 0.5, 6.0, 2.9999999999)] == [4, 3, 1, 1, 6, 3]


def test_method_errors_are_one_line(tmp_path, tiny_model_dir, glue_dir, capsys):
    argv = [
        "train",
        "--task",
        "mrpc",
        "--model",
        tiny_model_dir,
        "--output",
        str(tmp_path / "x"),
        "--data-dir",
        str(glue_dir),
        "--budgets",
        "2",
    ]
    assert main([*argv, "--method", "deebert"]) == 2
    err = capsys.readouterr().err
    assert "method='deebert'" in err and "'pabee'" in err and len(err.strip().splitlines()) == 1
    assert (
        main(
            [
                "train",
                "--task",
                "stsb",
                "--method",
                "entropy",
                "--model",
                tiny_model_dir,
                "--output",
                str(tmp_path / "y"),
                "--data-dir",
                str(glue_dir),
                "--budgets",
                "2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "needs a classification task" in err and "berxit" in err
    assert not (tmp_path / "y").exists()  # refused before anything was written


def test_measured_speed_of_an_exit_model():
    from hadskip.core.speed import measure_speed
    from hadskip.data.encoding import Encoded

    model = ExitModel(tiny_model("bert"), "entropy", "entropy").eval()
    model.threshold = -math.inf  # every sequence exits after layer 1: an ideal speed-up of 4
    rng = np.random.default_rng(0)
    ids = [[2, *rng.integers(5, 900, size=n - 1).tolist()] for n in rng.integers(6, 20, size=16)]
    data = Encoded(ids, None, np.zeros(16, dtype=np.int64), pad_id=0)
    row = measure_speed(model, data, [8], repeats=1)[0]
    assert (
        row.ideal_speedup == pytest.approx(4.0) and row.mean_layers == 1.0 and row.speedup > 0
    )  # timing: bench/


def test_sweep_methods_have_their_own_spaces_and_skip_what_they_cannot_serve(tmp_path):
    sweep = SweepSettings(
        tasks=["mrpc", "stsb"],
        budgets=[3.0],
        methods=["hadskip", "entropy", "berxit"],
        storage=str(tmp_path),
        results=str(tmp_path / "r"),
    )
    assert sweep.pairs() == [
        ("mrpc", "hadskip"),
        ("mrpc", "entropy"),
        ("mrpc", "berxit"),
        ("stsb", "hadskip"),
        ("stsb", "berxit"),
    ]
    assert (
        sweep.study("mrpc", "berxit") == "glue-sweep-mrpc-berxit" and sweep.study("mrpc") == "glue-sweep-mrpc"
    )
    assert "exits.weight_lr" in METHODS["leebert"].space and "stage3.beta" not in METHODS["pabee"].space
    settings = trial_settings(sweep, "mrpc", {"exits.lr": 3e-5, "stage3.beta": 9.0}, "pabee")
    assert settings.method == "pabee" and settings.exits.lr == 3e-5 and settings.stage3.beta != 9.0
    with pytest.raises(ValueError, match="method 'deebert' is unknown"):
        SweepSettings(tasks=["mrpc"], budgets=[3.0], methods=["deebert"])
    with pytest.raises(ConfigError):
        build_settings({}, ["method=deebert"])
