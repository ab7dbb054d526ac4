"""The training loop: which parameters each stage moves, divergence, calibration, distillation terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_model

from hadskip.config import GateSettings, Stage1Settings, Stage2Settings, Stage3Settings
from hadskip.core import losses as losses_module
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


@pytest.mark.parametrize("estimator", ["reinmax", "reinforce"])
def test_stage2_changes_only_gate_parameters(estimator):
    model = GatedModel(tiny_model("bert")).to("cpu")
    before = _snapshot(model)
    fit(
        model,
        stages.stage2(Stage2Settings(batch_size=8, max_steps=3), GateSettings(estimator=estimator)),
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
    every_term = {"alpha_hidden": 1.0, "alpha_attn": 1.0, "alpha_emb": 1.0}
    stage3 = stages.stage3(
        Stage3Settings(batch_size=8, max_steps=4, lr=1e-3, **every_term), GateSettings(), teacher, 2.0
    )
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
    assert set(terms) == {"task", "budget", "total", "layers", "entropy"}
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


def _budget_only_batch():
    ids = torch.randint(5, 1000, (4, 6), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1, 0, 1])}


@pytest.mark.parametrize("target", ["sampled", "expected"])
@pytest.mark.parametrize("detach", [False, True])
def test_a_detached_gate_input_keeps_the_budget_gradient_out_of_the_backbone(detach, target):
    torch.manual_seed(0)
    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    settings = Stage3Settings(
        alpha_pred=0, alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=1.0, budget_target=target
    )
    stage = stages.stage3(settings, GateSettings(estimator="reinmax", detach_input=detach), teacher, 1.0)
    stage.loss(model, _budget_only_batch(), 0)["budget"].backward()
    backbone = sum(float(p.grad.abs().sum()) for p in model.backbone_parameters() if p.grad is not None)
    gates = sum(float(p.grad.abs().sum()) for p in model.gate_parameters() if p.grad is not None)
    assert gates > 0
    assert (backbone == 0) if detach else (backbone > 0)


def _spy_on_the_surrogate(monkeypatch) -> dict:
    """What the score-function surrogate is called with (its row losses and baseline), recorded per call."""
    seen = {}
    real = losses_module.score_function_surrogate

    def spy(row_losses, gates, probs, baseline_losses=None, normalize=False):
        seen["rows"], seen["baseline"] = row_losses, baseline_losses
        seen.setdefault("calls", []).append((row_losses, gates, baseline_losses))
        seen.setdefault("normalize", []).append(normalize)
        return real(row_losses, gates, probs, baseline_losses, normalize)

    monkeypatch.setattr(losses_module, "score_function_surrogate", spy)
    return seen


def test_the_score_function_estimator_moves_the_gates_by_each_rows_loss_against_the_batch(monkeypatch):
    torch.manual_seed(0)
    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    seen = _spy_on_the_surrogate(monkeypatch)
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=0.0, budget_target="expected")
    gates = GateSettings(estimator="reinforce", detach_input=True)
    terms = stages.stage3(settings, gates, teacher, 2.0).loss(model, _budget_only_batch(), 0)
    # the reward is each row's task + prediction-distillation loss; with beta = 0 only it moves the gates
    torch.testing.assert_close(seen["rows"].mean(), terms["task"] + terms["kd_pred"])
    terms["total"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.gate_parameters() if p.grad is not None) > 0
    torch.testing.assert_close(terms["total"], terms["task"] + terms["kd_pred"])
    assert seen["baseline"] is None  # the batch's other rows


def test_the_greedy_baseline_scores_each_row_on_its_deterministic_route(monkeypatch):
    torch.manual_seed(0)
    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    model.threshold = 0.9  # a calibrated threshold must not leak into the baseline: p(run) > 0.5 decides
    seen = _spy_on_the_surrogate(monkeypatch)
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=0.0, alpha_pred=0.5)
    gates = GateSettings(estimator="reinforce", baseline="greedy")
    batch = _budget_only_batch()
    terms = stages.stage3(settings, gates, teacher, 2.0).loss(model, batch, 0)
    assert model.training and all(m.training for m in model.modules())  # its own modes back
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        model.eval()
        routes = model(**inputs, threshold=0.5, return_probs=True)
        forced = model(**inputs, forced_gates=(routes.probs > 0.5).float())
        t_logits = teacher(**inputs, open_gates=True).logits
    expected = losses_module.per_row_task_loss(forced.logits, batch["labels"])
    expected = expected + 0.5 * losses_module.per_row_prediction_kd(forced.logits, t_logits)
    torch.testing.assert_close(seen["baseline"], expected)
    assert not seen["baseline"].requires_grad
    terms["total"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.gate_parameters() if p.grad is not None) > 0


def test_the_pair_baseline_samples_a_second_route_and_each_route_is_the_others_baseline(monkeypatch):
    torch.manual_seed(0)
    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    seen = _spy_on_the_surrogate(monkeypatch)
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=0.0, alpha_pred=0.5)
    gates = GateSettings(estimator="reinforce", baseline="pair")
    terms = stages.stage3(settings, gates, teacher, 2.0).loss(model, _budget_only_batch(), 0)
    (rows_a, gates_a, base_a), (rows_b, gates_b, base_b) = seen["calls"]
    assert base_a is rows_b and base_b is rows_a
    assert not (gates_a == gates_b).all()  # two independent samples
    torch.testing.assert_close(rows_a.mean(), terms["task"] + 0.5 * terms["kd_pred"])
    torch.testing.assert_close(terms["total"], terms["task"] + 0.5 * terms["kd_pred"])  # the surrogate adds 0
    terms["total"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.gate_parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("baseline", ["batch", "pair"])
def test_normalised_advantages_reach_every_surrogate_of_stages_ii_and_iii(monkeypatch, baseline):
    teacher = GatedModel(tiny_model("bert")).eval()
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=0.0)
    seen = _spy_on_the_surrogate(monkeypatch)
    grads = {}
    for norm in ("none", "rms"):
        torch.manual_seed(0)  # the same model, the same sampled routes
        model = GatedModel(tiny_model("bert")).train()
        gates = GateSettings(baseline=baseline, advantage_norm=norm)
        stages.stage2_loss(gates, model, _budget_only_batch(), 0)["total"].backward()
        stages.stage3(settings, gates, teacher, 2.0).loss(model, _budget_only_batch(), 0)["total"].backward()
        grads[norm] = torch.cat([p.grad.flatten() for p in model.gate_parameters() if p.grad is not None])
    calls = 2 if baseline == "batch" else 4  # the pair baseline scores both routes, each against the other
    assert seen["normalize"] == [False] * calls + [True] * calls
    assert not torch.allclose(grads["none"], grads["rms"])


@pytest.mark.parametrize("stage", ["II", "III"])
def test_the_entropy_bonus_lowers_the_loss_by_its_weight_times_the_route_entropy_and_moves_only_gates(stage):
    teacher = GatedModel(tiny_model("bert")).eval()
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, beta=1.0)

    def run(bonus):
        torch.manual_seed(0)  # the same model, the same sampled routes
        model = GatedModel(tiny_model("bert")).train()
        gates = GateSettings(entropy_bonus=bonus)
        if stage == "II":
            terms = stages.stage2_loss(gates, model, _budget_only_batch(), 0)
        else:
            terms = stages.stage3(settings, gates, teacher, 2.0).loss(model, _budget_only_batch(), 0)
        terms["total"].backward()
        return terms, model

    (off, plain), (on, bonus) = run(0.0), run(0.25)
    assert 0 < on["entropy"] <= 6 * math.log(2)
    torch.testing.assert_close(on["entropy"], off["entropy"])
    torch.testing.assert_close(on["total"], off["total"] - 0.25 * on["entropy"])
    gate_ids = {id(p) for p in bonus.gate_parameters()}
    for (name, a), b in zip(plain.model.named_parameters(), bonus.model.parameters(), strict=True):
        if id(b) in gate_ids:
            assert not torch.equal(a.grad, b.grad), name
        else:  # the gates read detached states: the bonus stops at them
            assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("target", ["expected", "sampled"])
def test_the_budget_penalty_reads_p_run_or_the_sampled_gates(target, monkeypatch):
    seen = {}
    real_forward = GatedModel.forward

    def spy_forward(self, *args, **kwargs):
        seen["out"] = out = real_forward(self, *args, **kwargs)
        return out

    model = GatedModel(tiny_model("bert")).train()
    teacher = GatedModel(tiny_model("bert")).eval()
    monkeypatch.setattr(GatedModel, "forward", spy_forward)
    settings = Stage3Settings(
        alpha_hidden=0, alpha_attn=0, alpha_emb=0, budget_target=target, budget_loss="relative"
    )
    gates = GateSettings(estimator="reinmax")
    terms = stages.stage3(settings, gates, teacher, 2.0).loss(model, _budget_only_batch(), 0)
    out = seen["out"]  # the student's forward (the teacher's runs first)
    assert out.probs is not None and out.probs.requires_grad  # training records p(run) too
    usage = out.probs if target == "expected" else out.gates
    torch.testing.assert_close(terms["budget"], ((usage.mean() - 0.5) / 0.5) ** 2)


def test_per_group_clipping_bounds_backbone_and_gates_separately(caplog):
    from hadskip.core.loop import clip_gradients

    def groups():
        big, small = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(3))
        big.grad, small.grad = torch.full((4,), 5.0), torch.full((3,), 0.1)  # norms 10 and 0.173
        return [{"params": [big], "kind": "backbone"}, {"params": [small], "kind": "added"}], big, small

    g, big, small = groups()
    norms = clip_gradients(g, 1.0, "per_group")
    assert norms == pytest.approx({"backbone": 10.0, "added": 0.1 * 3**0.5})
    assert big.grad.norm().item() == pytest.approx(1.0)
    torch.testing.assert_close(small.grad, torch.full((3,), 0.1))  # under the limit: untouched
    g, big, small = groups()
    clip_gradients(g, 1.0, "global")  # one norm: the small group shrinks with the big one
    assert torch.cat([big.grad, small.grad]).norm().item() == pytest.approx(1.0)
    assert small.grad[0].item() < 0.01
    # end to end: stage III trains with per-group clipping
    model = GatedModel(tiny_model("bert"))
    teacher = GatedModel(tiny_model("bert")).eval()
    settings = Stage3Settings(
        batch_size=8, max_steps=2, clip="per_group", budget_target="expected", alpha_attn=0
    )
    with caplog.at_level("INFO", logger="hadskip.core.loop"):
        stats = fit(
            model,
            stages.stage3(settings, GateSettings(detach_input=True), teacher, 2.0),
            _data(),
            Runtime(),
            seed=0,
        )
    assert np.isfinite(stats.losses["total"])
    # the log says each clipped set's gradient norm before clipping; the stage's losses stay losses only
    summary = [r.getMessage() for r in caplog.records if "steps in" in r.getMessage()][-1]
    norms = dict(kv.rsplit(" ", 1) for kv in summary.split("; grad norm ")[1].split(", "))
    assert set(norms) == {"backbone", "added"} and all(float(v) > 0 for v in norms.values())
    assert not any("grad" in k for k in stats.losses)


def test_training_without_dropout_is_deterministic_and_keeps_the_gates_training():
    model = GatedModel(tiny_model("bert")).train()
    ids, mask = _budget_only_batch()["input_ids"], _budget_only_batch()["attention_mask"]
    model.train_without_dropout()
    a, b = model(ids, mask, sample=False), model(ids, mask, sample=False)
    torch.testing.assert_close(a.logits, b.logits)  # no dropout anywhere
    assert a.gates.requires_grad  # the gates still train through ReinMax
    with model.eval_mode():
        assert not any(m.training for m in model.modules())
    assert (
        model.gated_layers[0].training and not model.gated_layers[0].base_layer.training
    )  # restored exactly


def test_deployed_route_finetuning_trains_the_backbone_on_the_calibrated_routes(monkeypatch):
    model = GatedModel(tiny_model("bert", layers=4))
    teacher = GatedModel(tiny_model("bert", layers=4)).eval()
    model.threshold = 0.5
    routes_seen = []
    real_forward = GatedModel.forward

    def spy(self, *args, forced_gates=None, **kwargs):
        if forced_gates is not None:
            routes_seen.append(forced_gates.clone())
        return real_forward(self, *args, forced_gates=forced_gates, **kwargs)

    batch = _budget_only_batch()
    with torch.no_grad(), model.eval_mode():
        expected = model(batch["input_ids"], batch["attention_mask"]).gates.bool()
    monkeypatch.setattr(GatedModel, "forward", spy)
    stage = stages.deployed_routes(
        Stage3Settings(route_finetune_steps=2, batch_size=8, lr=1e-3), teacher, 2.0
    )
    terms = stage.loss(model, batch, 0)
    assert torch.equal(routes_seen[0], expected) and set(terms) == {"task", "kd_pred", "total", "layers"}
    before = _snapshot(model)
    monkeypatch.setattr(GatedModel, "forward", real_forward)
    stats = fit(model, stage, _data(), Runtime(), seed=0)
    moved = _moved(before, model)
    assert stats.steps == 2 and not any(moved[n] for n, (_, is_gate) in before.items() if is_gate)
    assert moved["classifier.weight"]


def test_cached_teacher_logits_give_the_same_prediction_distillation_without_a_teacher_pass(monkeypatch):
    from hadskip.data.encoding import batch_indices, iterate

    teacher = GatedModel(tiny_model("bert", seed=1)).eval()
    model = GatedModel(tiny_model("bert")).eval()
    data = _data(n=24)
    cached = torch.from_numpy(predict(teacher, data, Runtime(), open_gates=True).logits)
    # eval mode and argmax gates for a deterministic pair of passes (argmax decisions need ReinMax)
    settings = Stage3Settings(alpha_hidden=0, alpha_attn=0, alpha_emb=0, budget_target="sampled")
    gates = GateSettings(sample=False, estimator="reinmax")
    idx, batch = next(iterate(data, batch_indices(data.lengths, 8, shuffle=True, seed=3), "cpu"))
    torch.manual_seed(0)
    live = stages.stage3(settings, gates, teacher, 2.0).loss(model, batch, 0)
    calls = []
    monkeypatch.setattr(teacher, "forward", lambda *a, **k: calls.append(1))
    stage = stages.stage3(settings, gates, teacher, 2.0, cached)
    assert stage.with_rows
    torch.manual_seed(0)
    from_cache = stage.loss(model, {**batch, "rows": torch.as_tensor(idx)}, 0)
    assert calls == []  # no teacher forward
    torch.testing.assert_close(from_cache["kd_pred"], live["kd_pred"], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="cannot serve hidden-state"):
        stages.stage3(Stage3Settings(alpha_hidden=1.0), GateSettings(), teacher, 2.0, cached)


def test_teacher_logits_are_cached_only_when_the_path_reads_at_least_one_pass_over_the_rows():
    predictions_only = Stage3Settings()  # the default: no feature terms
    assert stages.caches_teacher_logits(
        predictions_only, train_rows=8551, path_steps=7
    )  # a full epoch a step
    capped = Stage3Settings(max_steps=2, batch_size=32)  # a smoke run reads 7 * 64 = 448 of 8551 rows
    assert not stages.caches_teacher_logits(capped, train_rows=8551, path_steps=7)
    assert stages.caches_teacher_logits(capped, train_rows=448, path_steps=7)
    assert not stages.caches_teacher_logits(Stage3Settings(alpha_hidden=1.0), train_rows=100, path_steps=7)
