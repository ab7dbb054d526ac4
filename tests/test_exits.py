"""Early exit: the rules, their calibration to a budget, real exit in the model, and the baselines' losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_batch, tiny_model

from hadskip.baselines import berxit, leebert, pabee
from hadskip.baselines.exit_model import ExitModel
from hadskip.baselines.rules import EntropyRule, PatienceRule, calibrate_exit, first_exit
from hadskip.checkpoint import load


def test_first_exit_takes_the_first_layer_whose_score_reaches_the_threshold():
    scores = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.95], [0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    assert first_exit(scores, 0.75).tolist() == [1, 2, 4, 4]  # 4 = the last layer: nobody stops there early
    assert first_exit(scores, 0.5).tolist() == [1, 2, 4, 1]  # reaching the threshold is enough
    assert first_exit(scores, -math.inf).tolist() == [1, 1, 1, 1]
    assert first_exit(scores, math.inf).tolist() == [4, 4, 4, 4]


@pytest.mark.parametrize("budget", [1.5, 3.0, 4.5])
def test_calibration_hits_a_requested_budget_on_synthetic_confidences(budget):
    rng = np.random.default_rng(0)
    # confidences that grow with depth, as real internal classifiers' do
    scores = rng.uniform(size=(4000, 5)) + np.linspace(0.0, 0.6, 5)
    threshold, mean = calibrate_exit(scores, budget)
    assert abs(mean - budget) < 0.01
    assert first_exit(scores, threshold).mean() == pytest.approx(mean)


def test_calibration_at_the_extremes_and_with_coarse_scores():
    scores = np.random.default_rng(1).uniform(size=(500, 5))
    t, mean = calibrate_exit(scores, 6.0)  # the whole model: nobody exits early
    assert t == math.inf and mean == 6.0
    t, mean = calibrate_exit(scores, 0.5)  # below one layer: the fewest it can do
    assert mean == 1.0
    # patience-like integer scores: only whole steps exist; the closest one wins, ties stay within budget
    counts = np.tile(np.arange(5), (100, 1)).astype(float)  # count k at layer k + 1
    assert calibrate_exit(counts, 3.0) == (2.0, 3.0)
    assert calibrate_exit(counts, 1.5) == (0.0, 1.0)
    assert calibrate_exit(counts, 2.6) == (2.0, 3.0)


def test_patience_counts_consecutive_agreements_and_resets():
    rule = PatienceRule()
    rule.reset(2, torch.device("cpu"))
    seq = [
        [[2.0, 0.0], [0.0, 2.0]],
        [[3.0, 0.0], [2.0, 0.0]],
        [[1.0, 0.0], [0.0, 1.0]],
        [[0.0, 1.0], [0.0, 1.0]],
    ]
    counts = [rule.step(torch.tensor(lg), None).tolist() for lg in seq]
    assert counts == [[0, 0], [1, 0], [2, 0], [0, 1]]
    reg = PatienceRule(delta=0.1)
    reg.reset(1, torch.device("cpu"))
    assert [reg.step(torch.tensor([[v]]), None).item() for v in (0.5, 0.55, 0.58, 0.9)] == [0, 1, 2, 0]


def test_entropy_score_is_minus_the_entropy():
    score = EntropyRule().step(torch.tensor([[0.0, 0.0], [20.0, 0.0]]), None)
    assert score[0].item() == pytest.approx(-math.log(2))
    assert score[1].item() == pytest.approx(0.0, abs=1e-6)


def _exit_model(rule="entropy", arch="bert"):
    model = ExitModel(tiny_model(arch), "entropy" if rule == "entropy" else "pabee", rule).eval()
    torch.manual_seed(3)
    for head in model.heads:  # confident, input-dependent internal classifiers
        torch.nn.init.normal_(head.out.weight, std=4.0)
    return model


def _count_layer_calls(model):
    calls = [0] * model.num_layers
    for i, layer in enumerate(model.gated_layers):
        layer.base_layer.register_forward_hook(
            lambda m, a, o, i=i: calls.__setitem__(i, calls[i] + a[0].shape[0])
        )
    return calls


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_without_exits_the_exit_model_is_the_hf_model(arch):
    hf = tiny_model(arch)
    ids, mask = tiny_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        out = ExitModel(hf, "entropy", "entropy").eval()(ids, mask)  # threshold inf until calibrated
    torch.testing.assert_close(out.logits, ref)
    assert bool(out.gates.all())


def test_an_exited_sequence_runs_no_further_layer_and_answers_with_its_head():
    model = _exit_model()
    ids, mask = tiny_batch(batch=6)
    calls = _count_layer_calls(model)
    with torch.no_grad():
        out = model(ids, mask, threshold=-math.inf)  # everyone exits after layer 1
        assert calls == [6, 0, 0, 0]
        h1 = model(ids, mask, forced_gates=model.static_pattern(6, ids.device, 1), record_hidden=True)
    assert out.gates.sum(1).tolist() == [1.0] * 6
    torch.testing.assert_close(out.logits, model.heads[0](h1.trace.hidden[0][:, 0]))


def test_batched_exit_predicts_like_each_sequence_alone():
    model = _exit_model()
    ids, mask = tiny_batch(batch=8)
    with torch.no_grad():
        scores = torch.stack(
            [
                EntropyRule().step(lg, None)
                for lg in model.exit_outputs(input_ids=ids, attention_mask=mask).logits[:-1]
            ],
            1,
        )
        model.threshold = calibrate_exit(scores.numpy(), 2.5)[0]  # some exit early, some later, some never
        calls = _count_layer_calls(model)
        batched = model(ids, mask)
        single = [model(ids[i : i + 1], mask[i : i + 1]) for i in range(8)]
    layers = batched.gates.sum(1)
    assert layers.min() >= 1 and layers.max() == 4 and len(set(layers.tolist())) > 1
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in single]), rtol=1e-5, atol=1e-5)
    assert torch.equal(batched.gates, torch.cat([s.gates for s in single]))
    # the layers ran exactly as often as the executed-layer matrix says, batched (and again singly)
    assert calls == (batched.gates.sum(0) * 2).int().tolist()


def test_static_runs_the_first_k_layers_and_the_models_own_head():
    model = ExitModel(tiny_model("bert"), "static", "static").eval()
    model.static_layers = 2
    ids, mask = tiny_batch()
    calls = _count_layer_calls(model)
    with torch.no_grad():
        out = model(ids, mask)
    assert calls == [5, 5, 0, 0] and out.gates.sum(1).tolist() == [2.0] * 5


def test_saved_exit_model_loads_back_with_its_rule_and_threshold(tmp_path):
    model = _exit_model(rule="patience")
    model.threshold, model.patience_delta = 2.0, 0.2
    model.save_pretrained(tmp_path / "ckpt")
    back = load(tmp_path / "ckpt")
    assert isinstance(back, ExitModel) and back.rule == "patience" and back.method == "pabee"
    assert back.threshold == 2.0 and back.patience_delta == 0.2
    ids, mask = tiny_batch()
    with torch.no_grad():
        a, b = model(ids, mask), back(ids, mask)
    torch.testing.assert_close(a.logits, b.logits)
    assert torch.equal(a.gates, b.gates)


def test_pabee_loss_weighs_deeper_exits_more():
    assert pabee.pabee_loss(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(1 / 6)
    assert pabee.pabee_loss(torch.tensor([0.0, 0.0, 1.0])).item() == pytest.approx(3 / 6)


def test_lte_targets_are_correctness_and_closeness():
    labels = torch.tensor([0, 1])
    t = berxit.lte_targets([torch.tensor([[2.0, 0.0], [2.0, 0.0]])], labels)
    assert t.tolist() == [[1.0, 0.0]]
    reg = berxit.lte_targets([torch.tensor([[1.0], [3.0]])], torch.tensor([1.0, 1.0]))
    assert reg[0, 0].item() == pytest.approx(1.0) and reg[0, 1].item() == pytest.approx(1 - math.tanh(2.0))


def test_leebert_terms():
    same = [torch.tensor([[1.0, -1.0], [0.5, 0.2]])] * 3
    assert torch.allclose(leebert.mutual_kd_rows(same, 2.0), torch.zeros(3, 3, 2), atol=1e-6)
    w = leebert.leebert_weights(torch.zeros(3, 3))
    assert torch.allclose(w, torch.ones(3, 3))  # uniform weights start at 1
    diff = [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[0.0, 0.0]])]
    kd = leebert.mutual_kd_rows(diff)
    assert kd[0, 1, 0] > 0 and kd[0, 0, 0] == 0
    ce = torch.tensor([[1.0], [2.0], [3.0]])
    rows = leebert.leebert_rows(ce, kd, w)
    assert rows.item() == pytest.approx(6.0 + kd.sum().item() / 6)
