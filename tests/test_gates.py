"""ReinMax against the reference implementation (the `reinmax` package by its author)."""

from __future__ import annotations

import pytest
import torch

from hadskip.core.gates import RUN, SkipGate, reinmax, sample_one_hot, straight_through, uncertainty


@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("classes", [2, 5])
def test_reinmax_gradient_matches_reference_package(tau, classes):
    ref = pytest.importorskip("reinmax")
    torch.manual_seed(0)
    logits = torch.randn(64, classes, dtype=torch.float64)
    upstream = torch.randn(64, classes, dtype=torch.float64)

    x_ref = logits.clone().requires_grad_(True)
    torch.manual_seed(1)
    sample, _ = ref.reinmax(x_ref.contiguous(), tau)  # the package always samples
    (sample * upstream).sum().backward()

    x = logits.clone().requires_grad_(True)
    out = reinmax(x, sample.detach(), tau)  # same sample D
    (out * upstream).sum().backward()

    torch.testing.assert_close(out.detach(), sample.detach(), rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-12)


def test_reinmax_differs_from_straight_through():
    torch.manual_seed(0)
    logits = torch.randn(32, 2, requires_grad=True)
    d = sample_one_hot(logits)
    up = torch.randn(32, 2)
    (reinmax(logits, d) * up).sum().backward()
    g_rm = logits.grad.clone()
    logits.grad = None
    (straight_through(logits, d) * up).sum().backward()
    assert not torch.allclose(g_rm, logits.grad)


def test_sample_one_hot_follows_the_probabilities():
    logits = torch.tensor([[0.0, 2.0]]).expand(20000, 2)
    torch.manual_seed(0)
    d = sample_one_hot(logits)
    assert torch.all(d.sum(-1) == 1)
    p_run = torch.softmax(torch.tensor([0.0, 2.0]), -1)[RUN].item()
    assert d[:, RUN].mean().item() == pytest.approx(p_run, abs=0.01)


def test_gate_initial_bias_shifts_the_run_logit():
    torch.manual_seed(0)
    gate = SkipGate(16, 8, init_run_bias=2.0)
    x = torch.randn(32, 16)
    logits = gate(x)
    with torch.no_grad():
        gate.fc2.bias.zero_()
    plain = gate(x)
    gap = (logits[:, RUN] - logits[:, 0]) - (plain[:, RUN] - plain[:, 0])
    torch.testing.assert_close(gap, torch.full((32,), 2.0))


def test_fresh_gates_already_depend_on_the_input():
    torch.manual_seed(0)
    gate = SkipGate(384, 64)
    p = gate(torch.randn(256, 384) * 0.5 + 1.0).softmax(-1)[:, RUN]  # scale and offset: the norm removes them
    assert p.std() > 0.05


@pytest.mark.parametrize("threshold", [0.0, 0.057, 0.3, 0.5, 0.95, 1.0])
def test_cheap_decision_equals_the_probability_threshold(threshold):
    torch.manual_seed(0)
    gate = SkipGate(48, 16, init_run_bias=0.5)
    with torch.no_grad():  # a trained-looking norm: scale and shift away from 1 and 0
        gate.norm.weight.uniform_(0.5, 1.5)
        gate.norm.bias.uniform_(-0.3, 0.3)
    x = torch.randn(4096, 48) * 3 + 1
    p = gate(x).softmax(-1)[:, RUN]
    fast = gate.decide(x, threshold)
    slow = p > threshold
    near = (p - threshold).abs() < 1e-6  # float rounding at the threshold itself
    assert fast.dtype == torch.bool and fast.shape == (4096,)
    assert torch.equal(fast[~near], slow[~near]) and slow.any() != (threshold >= 1.0)


def test_cheap_decision_refolds_when_the_weights_change():
    torch.manual_seed(1)
    gate = SkipGate(8, 4)
    x = torch.randn(256, 8)
    before = gate.decide(x, 0.5)
    with torch.no_grad():
        gate.fc2.bias[RUN] += 50.0  # every gate opens
    assert gate.decide(x, 0.5).all() and not torch.equal(before, gate.decide(x, 0.5))


def test_uncertainty_is_the_normalised_entropy_of_the_prediction():
    u = uncertainty(torch.tensor([[0.0, 0.0], [20.0, -20.0]]))
    torch.testing.assert_close(u, torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    three = uncertainty(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert three[0].item() == pytest.approx(1.0) and 0.0 < three[1].item() < 1.0
    torch.testing.assert_close(uncertainty(torch.randn(4, 1)), torch.zeros(4))  # regression: none


@pytest.mark.parametrize("threshold", [0.1, 0.5, 0.9])
def test_uncertainty_weight_shifts_the_run_logit_and_the_cheap_decision_follows(threshold):
    torch.manual_seed(0)
    gate = SkipGate(16, 8, uncertainty_weight=3.0)
    x, u = torch.randn(2048, 16), torch.rand(2048)
    logits = gate(x, u)
    with torch.no_grad():
        gate.uncertainty_weight.zero_()
    plain = gate(x, u)
    gap = (logits[:, RUN] - logits[:, 0]) - (plain[:, RUN] - plain[:, 0])
    torch.testing.assert_close(gap, 3.0 * (u - 0.5))
    with torch.no_grad():
        gate.uncertainty_weight.fill_(3.0)
    p = logits.softmax(-1)[:, RUN]
    near = (p - threshold).abs() < 1e-6
    assert torch.equal(gate.decide(x, threshold, u)[~near], (p > threshold)[~near])
    # a fixed prior, saved with the gate but never trained
    assert "uncertainty_weight" in gate.state_dict()
    assert all(p is not gate.uncertainty_weight for p in gate.parameters())
