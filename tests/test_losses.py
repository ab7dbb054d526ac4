from __future__ import annotations

import pytest
import torch

from hadskip.core import losses


def _states(seed=0, b=3, t=5, d=8, layers=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, d, generator=g) for _ in range(layers)]


def test_distillation_losses_are_zero_for_identical_teacher_and_student():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    h = _states()
    att = [torch.softmax(torch.randn(3, 5, 5), -1) for _ in range(2)]
    logits = torch.randn(3, 4)
    assert losses.prediction_kd(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.hidden_kd(h, [x.clone() for x in h], mask).item() == 0.0
    assert losses.attention_kd(att, [a.clone() for a in att], mask).item() == 0.0
    assert losses.embedding_kd(h[0], h[0].clone(), mask).item() == 0.0
    assert losses.prediction_kd(logits, torch.randn(3, 4)).item() > 0
    assert losses.hidden_kd(h, _states(seed=1), mask).item() > 0


def test_token_losses_ignore_padding():
    mask = torch.tensor([[1, 1, 0]])
    a = torch.zeros(1, 3, 2)
    b = torch.zeros(1, 3, 2)
    b[0, 2] = 100.0  # a difference only at the padded position
    assert losses.masked_mse(a, b, mask).item() == 0.0
    b[0, 0, 0] = 2.0  # one real difference of 2 over 2 tokens x 2 dims
    assert losses.masked_mse(a, b, mask).item() == pytest.approx(4.0 / 4)


def test_prediction_kd_is_kl_teacher_to_student():
    s = torch.tensor([[0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0]])
    p_t, p_s = torch.softmax(t, -1), torch.softmax(s, -1)
    expected = (p_t * (p_t.log() - p_s.log())).sum()
    assert losses.prediction_kd(s, t).item() == pytest.approx(expected.item(), rel=1e-6)


def test_regression_task_and_kd_losses_use_mse():
    logits = torch.tensor([[1.0], [3.0]])
    assert losses.task_loss(logits, torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)
    assert losses.prediction_kd(logits, torch.tensor([[1.0], [1.0]])).item() == pytest.approx(2.0)


def test_budget_penalty_is_squared_gap_of_mean_gate_to_budget_fraction():
    gates = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # mean 3/8
    assert losses.budget_penalty(gates, budget=2, num_layers=4).item() == pytest.approx((3 / 8 - 1 / 2) ** 2)
    assert losses.budget_penalty(gates, budget=1.5, num_layers=4).item() == pytest.approx(0.0)


def test_relative_budget_penalty_measures_the_miss_as_a_fraction_of_the_budget():
    gates = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # mean 3/8
    got = losses.budget_penalty(gates, budget=1, num_layers=4, form="relative").item()
    assert got == pytest.approx(((3 / 8 - 1 / 4) / (1 / 4)) ** 2)
    # the same 50% miss costs the same at any budget
    half = losses.budget_penalty(torch.full((2, 4), 0.75), budget=2, num_layers=4, form="relative")
    assert half.item() == pytest.approx(got)
    assert losses.budget_penalty(gates, 2, 4) == losses.budget_penalty(gates, 2, 4, form="squared")
    with pytest.raises(ValueError, match="not one of squared, relative"):
        losses.budget_penalty(gates, 2, 4, form="cubic")
