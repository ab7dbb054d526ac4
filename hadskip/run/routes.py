"""`hadskip routes`: which layers a trained checkpoint executes for each dev sequence, grouped by route and
by depth (`hadskip.data.routes`), at its own calibrated threshold or another one; optionally against the
same routes shuffled across the rows (does the input-dependence earn anything?)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hadskip.core.inference import predict
from hadskip.core.runtime import Runtime
from hadskip.data.metrics import predictions, task_metrics
from hadskip.data.routes import RouteSummary, ShuffleTest, route_summary, shuffled_routes
from hadskip.errors import ConfigError
from hadskip.run.curve import open_checkpoint


@dataclass(frozen=True)
class RoutesReport:
    summary: RouteSummary
    method: str
    task: str
    threshold: float
    budget: float | None
    shuffle: ShuffleTest | None  # None unless shuffles were asked for


def checkpoint_routes(
    checkpoint: str | Path,
    task: str,
    *,
    data_dir: str | None = None,
    threshold: float | None = None,
    shuffles: int = 0,
    seed: int = 0,
    runtime: Runtime | None = None,
    batch_size: int = 64,
) -> RoutesReport:
    """The route summary of `checkpoint` on the task's dev split and what it ran with; with `shuffles` > 0
    also its dev metric on its own routes against `shuffles` seeded shuffles of them (HadSkip only: an exit
    model's prediction comes from the head it exits at, not from a route)."""
    import torch

    if shuffles < 0:
        raise ConfigError(f"--shuffles {shuffles} must be 0 (off) or more")
    runtime = runtime or Runtime(device=torch.device("cpu"))
    model, method, _, data, meta = open_checkpoint(checkpoint, task, data_dir, runtime)
    if shuffles and method != "hadskip":
        raise ConfigError(
            f"--shuffles needs a HadSkip checkpoint; {checkpoint} is a {method} model, whose prediction "
            "comes from the exit it takes, not from a route"
        )
    dev = data.dev["dev"]
    out = predict(model, dev, runtime, batch_size, threshold=threshold)
    preds = predictions(data.task, out.logits)
    test = None
    if shuffles:
        name = data.task.metric

        def score(logits) -> float:
            return task_metrics(data.task, predictions(data.task, logits), dev.labels)[name]

        test = ShuffleTest(
            metric=name,
            own=score(out.logits),
            shuffled=tuple(
                score(predict(model, dev, runtime, batch_size, routes=r).logits)
                for r in shuffled_routes(out.executed, shuffles, seed)
            ),
        )
    return RoutesReport(
        summary=route_summary(out.executed, dev.labels, preds, data.task.is_regression),
        method=method,
        task=data.task.name,
        threshold=model.threshold if threshold is None else threshold,
        budget=meta.get("metadata", {}).get("budget"),
        shuffle=test,
    )
