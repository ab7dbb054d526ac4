"""Skipped layers cost nothing, learned batched routing equals one-by-one, and `hadskip bench-speed`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_batch, tiny_model

from hadskip.cli import main
from hadskip.core.model import GatedModel
from hadskip.core.speed import measure_latency, measure_speed
from hadskip.data.encoding import Encoded


def _rows_per_layer(model: GatedModel) -> tuple[list[int], list]:
    seen = [0] * model.num_layers
    hooks = [
        layer.base_layer.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__(i, seen[i] + a[0].shape[0])
        )
        for i, layer in enumerate(model.gated_layers)
    ]
    return seen, hooks


def test_a_closed_gate_layer_is_not_computed_for_that_sequence():
    model = GatedModel(tiny_model("bert")).eval()
    ids, mask = tiny_batch(batch=5)
    forced = torch.tensor(
        [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.bool
    )
    seen, hooks = _rows_per_layer(model)
    with torch.no_grad():
        model(ids, mask, forced_gates=forced)
    for h in hooks:
        h.remove()
    assert seen == forced.sum(0).tolist()  # rows each layer ran on: exactly the open ones
    seen, hooks = _rows_per_layer(model)
    with torch.no_grad():
        model(ids, mask, forced_gates=torch.zeros_like(forced))
    assert seen == [0, 0, 0, 0]  # skipping everything computes no layer at all


def test_learned_batched_routing_predicts_like_each_sequence_alone():
    torch.manual_seed(0)
    model = GatedModel(tiny_model("bert")).eval()
    for layer in model.gated_layers:  # decisions that vary with the input
        torch.nn.init.normal_(layer.gate.fc2.weight, std=3.0)
    ids, mask = tiny_batch(batch=8)
    with torch.no_grad():
        batched = model(ids, mask)
        alone = [model(ids[i : i + 1], mask[i : i + 1]) for i in range(8)]
    assert 0 < batched.gates.sum() < batched.gates.numel()
    assert torch.equal(batched.gates, torch.cat([a.gates for a in alone]))
    torch.testing.assert_close(batched.logits, torch.cat([a.logits for a in alone]), rtol=1e-5, atol=1e-5)


def _encoded(n: int = 24) -> Encoded:
    ids, mask = tiny_batch(batch=n, length=16)
    rows_ids = [ids[i][mask[i].bool()].tolist() for i in range(n)]
    return Encoded(input_ids=rows_ids, token_type_ids=None, labels=np.zeros(n, dtype=np.int64), pad_id=0)


def test_measure_speed_reports_consistent_figures():
    model = GatedModel(tiny_model("bert")).eval()
    data = _encoded()
    pattern = np.zeros((len(data), 4), bool)
    pattern[:, :2] = True  # every sequence runs 2 of 4 layers: ideal speed-up 2
    rows = measure_speed(model, data, [1, 8], repeats=2, patterns=pattern)
    assert [r.batch_size for r in rows] == [1, 8]
    for r in rows:
        assert r.mean_layers == 2 and r.ideal_speedup == 2 and r.sequences == len(data)
        assert r.speedup == pytest.approx(r.gated_seq_per_s / r.full_seq_per_s)
        assert r.efficiency == pytest.approx(r.speedup / 2) and r.gate_overhead_frac == 0
        # how fast is bench/speed.py's question, not a test's (the machine may be busy)
        assert r.full_seq_per_s > 0 and r.gated_seq_per_s > 0


def test_measure_latency_times_the_routing_it_is_asked_for():
    model = GatedModel(tiny_model("bert")).eval()
    data = _encoded()
    seen, hooks = _rows_per_layer(model)
    full = measure_latency(model, data, [1, 8], repeats=2, open_gates=True)
    for h in hooks:
        h.remove()
    # every layer saw every sequence once per pass: a warm-up and two repeats at each batch size
    assert seen == [len(data) * 3 * 2] * 4
    assert full.mean_layers == 4 and set(full.seconds) == {1, 8} and min(full.seconds.values()) > 0
    gated = measure_latency(model, data, [8], repeats=1, threshold=0.5, max_rows=16)
    reference = measure_speed(model, data, [8], repeats=1, threshold=0.5, max_rows=16)[0]
    assert gated.mean_layers == pytest.approx(reference.mean_layers)
    assert measure_latency(model, data, [8], repeats=1, threshold=1.0).mean_layers == 0


def test_bench_speed_cli_json(tmp_path, tiny_model_dir, glue_dir, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = GatedModel(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir))
    model.save_pretrained(tmp_path / "ckpt", tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    argv = [
        "bench-speed",
        str(tmp_path / "ckpt"),
        "--task",
        "mrpc",
        "--data-dir",
        str(glue_dir),
        "--batch-sizes",
        "1,4",
        "--max-rows",
        "16",
        "--repeats",
        "1",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {
        "batch_size",
        "full_seq_per_s",
        "gated_seq_per_s",
        "speedup",
        "ideal_speedup",
        "efficiency",
        "gate_overhead_frac",
    }
    assert [r["batch_size"] for r in out["rows"]] == [1, 4] and keys <= set(out["rows"][0])
    for r in out["rows"]:
        assert r["ideal_speedup"] == pytest.approx(4 / r["mean_layers"]) and 0 <= r["gate_overhead_frac"] < 1
        # the no-layer floor only lowers what skipping can attain
        assert 0 < r["floor_frac"] <= 1 and 1 <= r["attainable_speedup"] <= r["ideal_speedup"] + 1e-9
    assert out["dtype"] == "float32" and out["device"].startswith("cpu: ")
    assert main([*argv, "--dtype", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "bfloat16"
    assert main([*argv[:-3], "--batch-sizes", "0,x"]) == 2
    assert "--batch-sizes '0,x' must be a comma list of positive integers" in capsys.readouterr().err


def test_speed_columns_land_in_the_results_when_asked(tmp_path, tiny_model_dir, glue_dir):
    from hadskip.config import build_settings
    from hadskip.results import read_results
    from hadskip.run.train import train_run

    fast = [
        "data.train_limit=64",
        "data.dev_limit=32",
        "stage1.max_steps=2",
        "stage2.max_steps=1",
        "stage3.max_steps=1",
        "stage3.calibration_rows=32",
        "budgets=[2]",
        "speed_batch_size=8",
    ]
    settings = build_settings(
        {"model": {"name_or_path": tiny_model_dir}, "data": {"task": "mrpc", "data_dir": str(glue_dir)}}, fast
    )
    train_run(settings, str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), save_checkpoints=False)
    df = read_results(tmp_path / "run" / "results.parquet").set_index("method")
    point = df.loc["hadskip"]
    assert point.speed_batch_size == 8 and point.speedup > 0
    assert point.device.startswith("cpu: ") and point["dtype"] == "float32"  # what the speed was measured on
    assert point.ideal_speedup == pytest.approx(4 / point.mean_layers)  # all 32 dev rows timed
    assert np.isnan(df.loc["full"].speedup)


def test_a_bf16_backbone_keeps_float32_gates():
    from hadskip.core.speed import cast_backbone

    model = GatedModel(tiny_model()).eval()
    ids, mask = tiny_batch()
    with torch.no_grad():
        before = model(ids, mask, open_gates=True).logits
        cast_backbone(model, "bf16")
        after = model(ids, mask, open_gates=True).logits
        gated = model(ids, mask)  # the gates read bf16 states in float32 and still decide
    assert next(model.model.parameters()).dtype == torch.bfloat16 and after.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.gate_parameters())
    assert torch.allclose(after.float(), before, atol=0.05) and gated.gates.shape == (5, model.num_layers)
    with pytest.raises(ValueError, match="dtype 'int4' is not one of fp32, bf16, fp16"):
        cast_backbone(model, "int4")
