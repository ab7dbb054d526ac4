"""`hadskip routes`: which layers a trained checkpoint executes for each dev sequence, grouped by route and
by depth (`hadskip.data.routes`), at its own calibrated threshold or another one."""

from __future__ import annotations

from pathlib import Path

from hadskip.core.inference import predict
from hadskip.core.runtime import Runtime
from hadskip.data.metrics import predictions
from hadskip.data.routes import RouteSummary, route_summary
from hadskip.run.curve import open_checkpoint


def checkpoint_routes(
    checkpoint: str | Path,
    task: str,
    *,
    data_dir: str | None = None,
    threshold: float | None = None,
    runtime: Runtime | None = None,
    batch_size: int = 64,
) -> tuple[RouteSummary, dict]:
    """The route summary of `checkpoint` on the task's dev split, and what it ran with (threshold, budget)."""
    import torch

    runtime = runtime or Runtime(device=torch.device("cpu"))
    model, method, _, data, meta = open_checkpoint(checkpoint, task, data_dir, runtime)
    dev = data.dev["dev"]
    out = predict(model, dev, runtime, batch_size, threshold=threshold)
    preds = predictions(data.task, out.logits)
    summary = route_summary(out.executed, dev.labels, preds, data.task.is_regression)
    info = {
        "method": method,
        "threshold": model.threshold if threshold is None else threshold,
        "budget": meta.get("metadata", {}).get("budget"),
        "task": data.task.name,
    }
    return summary, info
