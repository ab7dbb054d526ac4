"""How adaptive a model's routing is: which layers each dev sequence executed, grouped (pure numpy).

A skip or exit model can meet its budget while giving every input the same route, which makes it a learned
static layer subset; `route_summary` shows that at a glance: the distinct routes and their shares, the
spread of executed layers per sequence, and per depth how many rows, how accurate, and how their gold and
predicted labels split, so a reader sees whether the deeper routes go to the harder rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

STATIC_SHARE = 0.95  # one route serving at least this share of rows: routing that is effectively static


@dataclass(frozen=True)
class DepthGroup:
    layers: int  # executed layers
    rows: int
    share: float  # of all rows
    accuracy: float | None  # classification; None for regression
    abs_error: float | None  # regression: mean |prediction - label|
    gold_common: float | None  # share of rows whose gold label is the dev set's most common one
    pred_common: float | None  # share predicted as that label


@dataclass(frozen=True)
class RouteSummary:
    rows: int
    num_layers: int
    mean_layers: float
    sd_layers: float
    layer_usage: list[float]
    routes: list[
        tuple[str, float]
    ]  # route as "1.3.6" (1-based executed layers, "-" for none), share; by share
    distinct: int
    groups: list[DepthGroup]
    common_label: int | None

    @property
    def static(self) -> bool:
        """Whether one route serves nearly every row."""
        return bool(self.routes) and self.routes[0][1] >= STATIC_SHARE


def route_name(executed_row: np.ndarray) -> str:
    layers = [str(i + 1) for i, run in enumerate(executed_row) if run]
    return ".".join(layers) or "-"


def route_summary(
    executed: np.ndarray, labels: np.ndarray, preds: np.ndarray, regression: bool
) -> RouteSummary:
    """`executed` (N, L) bool, gold `labels` and `preds` (N,): class ids, or scores for regression."""
    executed = np.asarray(executed, dtype=bool)
    n, num_layers = executed.shape
    if n == 0:
        raise ValueError("no rows to summarise")
    depth = executed.sum(1)
    counts = Counter(route_name(r) for r in executed)
    common = None if regression else int(np.bincount(labels.astype(int)).argmax())
    groups = []
    for k in sorted(set(depth.tolist())):
        sel = depth == k
        y, p = labels[sel], preds[sel]
        groups.append(
            DepthGroup(
                layers=int(k),
                rows=int(sel.sum()),
                share=float(sel.mean()),
                accuracy=None if regression else float((y == p).mean()),
                abs_error=float(np.abs(p - y).mean()) if regression else None,
                gold_common=None if regression else float((y == common).mean()),
                pred_common=None if regression else float((p == common).mean()),
            )
        )
    return RouteSummary(
        rows=n,
        num_layers=num_layers,
        mean_layers=float(depth.mean()),
        sd_layers=float(depth.std()),
        layer_usage=executed.mean(0).astype(float).tolist(),
        routes=[(name, c / n) for name, c in counts.most_common()],
        distinct=len(counts),
        groups=groups,
        common_label=common,
    )


@dataclass(frozen=True)
class ShuffleTest:
    """A model's dev metric on its own routes against the same routes handed to other rows at random: the
    shuffles keep every route and the mean executed layers exactly, and take away only which input gets
    which route. If the shuffles score as well, the routing chose layers, not inputs."""

    metric: str
    own: float
    shuffled: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.shuffled))

    @property
    def sd(self) -> float:
        return float(np.std(self.shuffled, ddof=1)) if len(self.shuffled) > 1 else 0.0

    @property
    def at_least_own(self) -> int:
        """Shuffles that scored at least the model's own routing."""
        return int(sum(s >= self.own for s in self.shuffled))

    @property
    def p_value(self) -> float:
        """One-sided permutation p-value of 'the own routing scores higher than chance assignment would'."""
        return (1 + self.at_least_own) / (1 + len(self.shuffled))


def shuffled_routes(executed: np.ndarray, shuffles: int, seed: int) -> list[np.ndarray]:
    """`shuffles` seeded permutations of the rows' routes (N, L): row i gets another row's route."""
    rng = np.random.default_rng(seed)
    return [executed[rng.permutation(len(executed))] for _ in range(shuffles)]
