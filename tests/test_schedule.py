from __future__ import annotations

import pytest

from hadskip.core.schedule import budget_path, lr_factor, step_epochs, steps_for


def test_homotopic_path_walks_down_from_L_through_every_budget_once():
    assert budget_path(6, [4.5, 3, 1.5]) == [6, 5, 4.5, 4, 3, 2, 1.5]
    assert budget_path(12, [9, 6, 3]) == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3]
    assert budget_path(6, [6]) == [6]
    assert budget_path(6, [3], step=0.5) == [6, 5.5, 5, 4.5, 4, 3.5, 3]
    assert budget_path(6, [3], step=2) == [6, 4, 3]


def test_homotopic_path_endpoints_and_monotonicity():
    for budgets in ([0.7], [5.9, 0.3], [2, 4]):
        path = budget_path(6, budgets)
        assert path[0] == 6 and path[-1] == min(budgets)
        assert all(a > b for a, b in zip(path, path[1:]))
        assert set(budgets) <= set(path)


def test_path_can_step_differently_below_a_fraction_of_the_layers():
    # half-layer steps down to 3 of 6 layers, whole layers below; 3 itself steps by the low step
    assert budget_path(6, [4.5, 3, 1.5], step=0.5, low_step=1, below=0.5) == [
        6,
        5.5,
        5,
        4.5,
        4,
        3.5,
        3,
        2,
        1.5,
    ]
    assert budget_path(6, [4.5, 1.5], step=1, low_step=0.5, below=0.5) == [6, 5, 4.5, 4, 3, 2.5, 2, 1.5]
    # a boundary off the step grid: the low step starts from the first point under it
    assert budget_path(6, [1], step=2, low_step=0.5, below=0.5) == [6, 4, 2, 1.5, 1]
    # no low step, or no boundary: one step throughout, as before
    assert budget_path(6, [1.5], step=0.5, below=0.5) == budget_path(6, [1.5], step=0.5)
    assert budget_path(6, [1.5], low_step=0.5) == budget_path(6, [1.5])


def test_bad_step_is_rejected():
    with pytest.raises(ValueError, match="step"):
        budget_path(6, [3], step=0)
    with pytest.raises(ValueError, match="low budget step"):
        budget_path(6, [3], low_step=-1.0, below=0.5)


def test_lr_warms_up_then_decays_to_zero():
    total, warm = 100, 10
    values = [lr_factor(s, total, warm) for s in range(total)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] == pytest.approx(1 / 90)


def test_steps_from_epochs_and_cap():
    assert steps_for(1.5, 10) == 15
    assert steps_for(0.01, 10) == 1
    assert steps_for(3, 10, max_steps=7) == 7


def test_low_budget_steps_are_lengthened_strictly_below_the_fraction_of_the_layers():
    assert [step_epochs(k, 6, 1.0, 2.0, 0.5) for k in (6, 4.5, 3, 2, 1.5)] == [1, 1, 1, 2, 2]
    assert [step_epochs(k, 12, 1.5, 3.0, 0.25) for k in (9, 6, 3, 2)] == [1.5, 1.5, 1.5, 4.5]
    assert step_epochs(1.5, 6, 1.5, 1.0, 0.5) == 1.5  # scale 1: every step alike
