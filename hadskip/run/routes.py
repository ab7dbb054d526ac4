"""`hadskip routes`: which layers a trained checkpoint executes for each dev sequence, grouped by route and
by depth (`hadskip.data.routes`), at its own calibrated threshold or another one."""

from __future__ import annotations

import json
from pathlib import Path

from hadskip.baselines.exit_model import ExitModel
from hadskip.checkpoint import load
from hadskip.core.inference import predict
from hadskip.core.model import META_FILE
from hadskip.core.runtime import Runtime
from hadskip.data.metrics import predictions
from hadskip.data.routes import RouteSummary, route_summary
from hadskip.errors import ConfigError
from hadskip.run.curve import _task_data, checkpoint_settings


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
    model = load(checkpoint)
    if model.tokenizer is None:
        raise ConfigError(f"checkpoint {checkpoint} has no tokenizer saved beside it")
    method = model.method if isinstance(model, ExitModel) else "hadskip"
    settings = checkpoint_settings(checkpoint, task, method)
    data = _task_data(
        model,
        task,
        data_dir or settings.data.data_dir,
        settings.data.max_length,
        settings.data.dev_limit,
        settings.seed,
    )
    model.to(runtime.device)
    dev = data.dev["dev"]
    out = predict(model, dev, runtime, batch_size, threshold=threshold)
    preds = predictions(data.task, out.logits)
    summary = route_summary(out.executed, dev.labels, preds, data.task.is_regression)
    meta = json.loads((Path(checkpoint) / META_FILE).read_text())
    info = {
        "method": method,
        "threshold": model.threshold if threshold is None else threshold,
        "budget": meta.get("metadata", {}).get("budget"),
        "task": data.task.name,
    }
    return summary, info
