"""The homotopic budget path and the learning-rate schedule, as pure functions."""

from __future__ import annotations

import math

_EPS = 1e-9


def budget_path(
    num_layers: int,
    budgets: list[float],
    step: float = 1.0,
    low_step: float | None = None,
    below: float = 0.0,
) -> list[float]:
    """The homotopic sequence s_0 = L > s_1 > ... > s_q = min(budgets) (paper Sec. 4.3, Stage III).

    Steps of `step` below L (L, L-1, ... by default), and of `low_step` (None: `step`) from the points at or
    under `below` x L, with every requested budget inserted where it falls, so one walk yields all of them:
    L=6, budgets [4.5, 3, 1.5] -> [6, 5, 4.5, 4, 3, 2, 1.5]; step 0.5, low_step 1, below 0.5 ->
    [6, 5.5, 5, 4.5, 4, 3.5, 3, 2, 1.5].
    """
    low_step = step if low_step is None else low_step
    for name, value in (("budget step", step), ("low budget step", low_step)):
        if value <= 0:
            raise ValueError(f"{name} {value!r} must be positive")
    lowest, boundary = min(budgets), below * num_layers
    points = {float(num_layers)}
    k = float(num_layers)
    while True:
        k -= low_step if k <= boundary + _EPS else step
        if k <= lowest + _EPS:
            break
        points.add(round(k, 6))
    points.update(float(b) for b in budgets)
    return sorted(points, reverse=True)


def step_epochs(budget: float, num_layers: int, epochs: float, low_scale: float, below: float) -> float:
    """Epochs of one homotopic step: `epochs` x `low_scale` where the budget is under `below` x the layers
    (the path's last, hardest points: 2 and 1.5 of 6 layers at `below` 0.5), `epochs` everywhere else."""
    if budget < below * num_layers - _EPS:
        return epochs * low_scale
    return epochs


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then linear decay to 0 at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def steps_for(epochs: float, batches_per_epoch: int, max_steps: int | None = None) -> int:
    steps = max(1, math.ceil(epochs * batches_per_epoch))
    return min(steps, max_steps) if max_steps is not None else steps
