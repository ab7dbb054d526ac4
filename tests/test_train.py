"""The training loop: which parameters each stage moves, divergence, calibration, distillation terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from hadskip.config import GateSettings, Stage1Settings, Stage2Settings, Stage3Settings
from hadskip.core import stages
from hadskip.core.inference import calibrate_threshold, predict
from hadskip.core.loop import fit
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime, TrainingDiverged
from hadskip.data.encoding import Encoded


def _data(n=48, seed=0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [[2, *rng.integers(5, 1000, size=int(rng.integers(3, 12))).tolist()] for _ in range(n)]
    labels = np.array([int(x[1] % 2) for x in ids])
    return Encoded(ids, None, labels, pad_id=0)


def _snapshot(model: GatedModel):
    gates = {id(p) for p in model.gate_parameters()}
    return {n: (p.detach().clone(), id(p) in gates) for n, p in model.model.named_parameters()}


def _moved(before, model):
    now = dict(model.model.named_parameters())
    return {n: not torch.equal(t, now[n].detach()) for n, (t, _) in before.items()}


def test_stage2_changes_only_gate_parameters():
    model = GatedModel(tiny_model("bert")).to("cpu")
    before = _snapshot(model)
    fit(
        model,
        stages.stage2(Stage2Settings(batch_size=8, max_steps=3), GateSettings()),
        _data(),
        Runtime(),
        seed=0,
    )
    moved = _moved(before, model)
    assert all(moved[n] for n, (_, is_gate) in before.items() if is_gate)
    assert not any(moved[n] for n, (_, is_gate) in before.items() if not is_gate)


def test_stage1_changes_only_the_backbone():
    model = GatedModel(tiny_model("bert"))
    before = _snapshot(model)
    fit(model, stages.stage1(Stage1Settings(batch_size=8, max_steps=3, lr=1e-3)), _data(), Runtime(), seed=0)
    moved = _moved(before, model)
    assert not any(moved[n] for n, (_, is_gate) in before.items() if is_gate)
    assert moved["bert.encoder.layer.0.base_layer.attention.self.query.weight"]
    assert moved["classifier.weight"]


def test_stage3_moves_everything_and_reports_every_term():
    model = GatedModel(tiny_model("bert"))
    teacher = GatedModel(tiny_model("bert")).eval()
    teacher.set_attn_implementation("eager")
    before = _snapshot(model)
    stage3 = stages.stage3(Stage3Settings(batch_size=8, max_steps=4, lr=1e-3), GateSettings(), teacher, 2.0)
    seen = []
    rt = Runtime(on_step=lambda *a: seen.append(a), log_every=2)
    stats = fit(model, stage3, _data(), rt, seed=0)
    assert all(_moved(before, model).values())
    assert {"task", "kd_pred", "kd_hidden", "kd_attn", "kd_emb", "budget", "total", "layers"} <= set(
        stats.losses
    )
    assert [s[1] for s in seen] == [2, 4] and seen[0][0] == "stage III k=2"


def test_switching_terms_off_removes_them():
    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    ids = torch.randint(5, 1000, (4, 6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0, 1])}
    settings = Stage3Settings(alpha_pred=0, alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=0)
    terms = stages.stage3(settings, GateSettings(), teacher, 2.0).loss(model, batch, 0)
    assert set(terms) == {"task", "budget", "total", "layers"}
    torch.testing.assert_close(terms["total"], terms["task"])


def test_nan_loss_stops_with_a_clear_error():
    model = GatedModel(tiny_model("bert"))
    with torch.no_grad():
        model.model.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"stage I \(fine-tune\): loss became nan at step 1/2"):
        fit(model, stages.stage1(Stage1Settings(batch_size=8, max_steps=2)), _data(), Runtime(), seed=0)


def test_calibrated_threshold_meets_the_budget_on_training_rows():
    model = GatedModel(tiny_model("bert", layers=6)).eval()
    g = torch.Generator().manual_seed(0)
    for layer in model.gated_layers:  # gates that open for most inputs at the 0.5 threshold
        layer.gate.fc1.weight.data.normal_(0, 1.0, generator=g)
        layer.gate.fc2.weight.data.normal_(0, 0.2, generator=g)
        layer.gate.fc2.bias.data = torch.tensor([0.0, 2.0])
    data = _data(n=200)
    plain = predict(model, data, Runtime()).executed.sum(1).mean()
    threshold, layers = calibrate_threshold(model, data, 3.0, Runtime(), rows=200)
    assert plain > 3.5
    assert abs(layers - 3.0) <= 0.5 and threshold > 0.5
    model.threshold = threshold
    assert predict(model, data, Runtime()).executed.sum(1).mean() == pytest.approx(layers)


def test_calibration_keeps_the_side_of_the_step_closer_to_the_budget():
    # one input-independent gate at p(run) = 0.6 and the rest always open: mean layers is 4 or 3
    model = GatedModel(tiny_model("bert", layers=4)).eval()
    for i, layer in enumerate(model.gated_layers):
        layer.gate.fc2.weight.data.zero_()
        layer.gate.fc2.bias.data = torch.tensor([0.0, 0.405 if i == 2 else 8.0])  # sigmoid(0.405) ~ 0.6
    data = _data(n=32)
    t, layers = calibrate_threshold(model, data, 3.8, Runtime(), rows=32)
    assert layers == 4.0 and t < 0.6  # 4 is 0.2 away, 3 is 0.8 away
    t, layers = calibrate_threshold(model, data, 3.2, Runtime(), rows=32)
    assert layers == 3.0 and t > 0.6
