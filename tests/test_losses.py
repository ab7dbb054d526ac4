from __future__ import annotations

import math

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


def test_score_function_surrogate_is_zero_valued_and_lowers_p_run_where_running_costs():
    probs = torch.full((4, 2), 0.5, requires_grad=True)
    gates = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    row_losses = torch.tensor([2.0, 2.0, 0.0, 0.0])  # the rows that ran layer 1 lost 2; layer 2 is irrelevant
    surrogate = losses.score_function_surrogate(row_losses, gates, probs)
    assert surrogate.item() == 0.0  # adds nothing to the logged total
    surrogate.backward()
    assert (probs.grad[:, 0] > 0).all()  # a descent step lowers p(run) of layer 1 for every row
    assert probs.grad[:, 1].sum().item() == pytest.approx(0.0, abs=1e-7)


def test_score_function_surrogate_is_an_unbiased_gradient_of_the_expected_loss():
    # loss = c . g + noise with independent gates g_i ~ Bernoulli(p_i): d E[loss] / d p_i = c_i exactly
    gen = torch.Generator().manual_seed(0)
    p = torch.tensor([0.3, 0.5, 0.8], requires_grad=True)
    c = torch.tensor([1.0, -0.5, 0.0])
    n = 200_000
    gates = (torch.rand(n, 3, generator=gen) < p.detach()).float()
    row_losses = gates @ c + 0.3 * torch.randn(n, generator=gen)
    losses.score_function_surrogate(row_losses, gates, p.expand(n, 3)).backward()
    torch.testing.assert_close(p.grad, c, atol=0.03, rtol=0.0)


def test_normalised_advantages_pull_the_gates_the_same_whatever_the_losss_scale():
    gen = torch.Generator().manual_seed(0)
    gates = (torch.rand(16, 3, generator=gen) < 0.5).float()
    row_losses = torch.rand(16, generator=gen)
    baseline = torch.rand(16, generator=gen)

    def grad(scale, normalize, with_baseline=False):
        probs = torch.full((16, 3), 0.4, requires_grad=True)
        base = scale * baseline if with_baseline else None
        losses.score_function_surrogate(scale * row_losses, gates, probs, base, normalize).backward()
        return probs.grad

    # in the loss's units the pull grows with the scale; normalised it does not, for either baseline
    torch.testing.assert_close(grad(5.0, False), 5.0 * grad(1.0, False))
    torch.testing.assert_close(grad(5.0, True), grad(1.0, True))
    torch.testing.assert_close(grad(5.0, True, True), grad(1.0, True, True))
    # the same direction, rescaled: every entry keeps its sign, and the advantages have unit mean square
    plain, scaled = grad(1.0, False), grad(1.0, True)
    assert torch.equal(plain.sign(), scaled.sign())
    ratio = scaled[plain.abs() > 1e-6] / plain[plain.abs() > 1e-6]
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))
    assert ratio[0].item() > 1.0  # losses in [0, 1] have advantages smaller than one on average
    # a batch where every route lost the same: no pull, and no division by zero
    probs = torch.full((4, 3), 0.4, requires_grad=True)
    losses.score_function_surrogate(torch.ones(4), gates[:4], probs, normalize=True).backward()
    assert probs.grad.abs().sum().item() == 0.0


def test_a_per_row_baseline_leaves_only_what_the_route_changed():
    probs = torch.full((3, 2), 0.5, requires_grad=True)
    gates = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # a hard row (loss 5) whose route cost nothing against its baseline, an easy one whose route cost 1
    row_losses = torch.tensor([5.0, 1.0, 3.0])
    baseline = torch.tensor([5.0, 0.0, 3.0])
    losses.score_function_surrogate(row_losses, gates, probs, baseline).backward()
    assert probs.grad[0].abs().sum().item() == 0.0  # the hard row says nothing about its route
    assert probs.grad[2].abs().sum().item() == 0.0
    assert (
        probs.grad[1, 0] > 0 and probs.grad[1, 1] < 0
    )  # less of the layer it ran, more of the one it skipped
    # the batch baseline instead blames the hard row's route for the row's difficulty
    batch = torch.full((3, 2), 0.5, requires_grad=True)
    losses.score_function_surrogate(row_losses, gates, batch).backward()
    assert batch.grad[0, 0] > 0 and batch.grad[1, 0] < 0


def test_two_routes_per_row_as_each_others_baseline_are_unbiased_and_cancel_row_difficulty():
    # loss = row difficulty d + c . g + noise; both estimators see two sampled routes of every row
    gen = torch.Generator().manual_seed(0)
    n, p, c = 20_000, torch.tensor([0.3, 0.5, 0.8]), torch.tensor([1.0, -0.5, 0.0])
    difficulty = 3.0 * torch.randn(n, generator=gen)

    def routes():
        gates = (torch.rand(n, 3, generator=gen) < p).float()
        return gates, difficulty + gates @ c + 0.3 * torch.randn(n, generator=gen)

    (ga, la), (gb, lb) = routes(), routes()
    pa, pb = (p.expand(n, 3).clone().requires_grad_() for _ in range(2))
    losses.paired_score_function_surrogate(la, ga, pa, lb, gb, pb).backward()
    paired = n * (pa.grad + pb.grad)  # each row's own estimate of dE[loss]/dp
    # the batch baseline on the same 2n routes: each row's two routes against the other rows' mean
    both = torch.cat([p.expand(n, 3), p.expand(n, 3)]).clone().requires_grad_()
    losses.score_function_surrogate(torch.cat([la, lb]), torch.cat([ga, gb]), both).backward()
    batch = n * (both.grad[:n] + both.grad[n:])
    torch.testing.assert_close(paired.mean(0), c, atol=0.05, rtol=0.0)
    torch.testing.assert_close(batch.mean(0), c, atol=0.3, rtol=0.0)
    # difficulty (std 3) swamps the batch baseline's per-row estimates (measured 10x the variance)
    assert (paired.var(0) * 5 < batch.var(0)).all()


def test_route_entropy_is_zero_for_a_fixed_route_and_a_bonus_on_it_pulls_p_run_towards_one_half():
    fair, fixed = torch.full((3, 4), 0.5), torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3)
    torch.testing.assert_close(losses.route_entropy(fair), torch.tensor(4 * math.log(2)))
    assert losses.route_entropy(fixed).item() < 1e-4
    # two rows, one near-certain and one undecided: the per-row sums are averaged over rows
    mixed = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    torch.testing.assert_close(losses.route_entropy(mixed), torch.tensor(math.log(2)), atol=1e-4, rtol=0)
    probs = torch.tensor([[0.9, 0.2, 0.5]], requires_grad=True)
    (-losses.route_entropy(probs)).backward()  # the bonus, as a loss
    assert probs.grad[0, 0] > 0 and probs.grad[0, 1] < 0  # descending moves 0.9 down and 0.2 up
    assert abs(probs.grad[0, 2].item()) < 1e-5  # already undecided


def test_per_row_prediction_kd_averages_to_the_batch_term():
    s, t = torch.randn(6, 3), torch.randn(6, 3)
    rows = losses.per_row_prediction_kd(s, t, 2.0)
    assert rows.shape == (6,) and (rows >= 0).all()
    torch.testing.assert_close(rows.mean(), losses.prediction_kd(s, t, 2.0))
    torch.testing.assert_close(
        losses.per_row_prediction_kd(s[:, :1], t[:, :1]).mean(), losses.prediction_kd(s[:, :1], t[:, :1])
    )
