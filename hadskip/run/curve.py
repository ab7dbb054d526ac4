"""The whole accuracy-latency curve of one trained model (`hadskip curve`, and the sweep's `--curves`).

A trained HadSkip or early-exit model is calibrated for one budget, but its inference threshold can be set
anywhere: sweeping it traces every trade-off the model offers. Per threshold: the dev metric, the mean
executed layers, and the measured latency (ms per sequence at batch 1 and 32, on this machine) — written as
results rows with `role = "curve"` beside a sweep's own rows. Latency times each point's routing alone and
the full model once per curve (a third of what `measure_speed`'s interleaved full / gated / gate-free
passes cost per point, which made `--curves` the slowest part of a CPU sweep).

HadSkip's threshold is on p(run) (mean layers fall as it rises), spaced evenly in logit so that gates that
sit near 0 or 1 still get points; an exit model's is on its exit score (mean layers rise with it), at
quantiles of its scores on dev. The model's own calibrated threshold is always one of the points.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadskip.baselines.exit_model import ExitModel, exit_scores
from hadskip.checkpoint import load
from hadskip.config import RunSettings, build_settings, migrate_saved
from hadskip.core.model import META_FILE, GatedModel
from hadskip.core.runtime import Runtime
from hadskip.core.speed import device_name, measure_latency
from hadskip.data.encoding import encode
from hadskip.data.metrics import majority_score
from hadskip.data.tasks import dev_split_names, get_task, load_split, subsample
from hadskip.errors import ConfigError, HadSkipError
from hadskip.results.io import write_point
from hadskip.results.schema import ResultRow, make_row, new_run_id
from hadskip.run.task_data import TaskData, evaluate

log = logging.getLogger(__name__)

LATENCY_BATCH_SIZES = (1, 32)
LOGIT_RANGE = 8.0  # HadSkip thresholds from sigmoid(-8) to sigmoid(8)


@dataclass(frozen=True)
class CurveOptions:
    points: int = 20
    latency_rows: int = 128  # dev rows timed per point and batch size; 0: no latency
    repeats: int = 2
    batch_size: int = 64  # evaluation batch size


def thresholds(model: GatedModel, data, runtime: Runtime, points: int) -> list[float]:
    """The thresholds to evaluate: the model's own calibrated one first (a repeat of its routing is then
    dropped, never the trained point), then the rest in ascending order."""
    if isinstance(model, ExitModel):
        if model.rule == "static":
            raise ConfigError(
                f"a {model.method} checkpoint runs a fixed number of layers: it has no threshold to sweep "
                "(curves need a hadskip or early-exit checkpoint)"
            )
        scores = exit_scores(model, data, runtime)
        grid = np.quantile(scores[np.isfinite(scores)], np.linspace(0.0, 1.0, max(points - 1, 1)))
        values = [*grid.tolist(), math.inf]  # inf: no early exit, every layer
    else:
        logits = np.linspace(-LOGIT_RANGE, LOGIT_RANGE, points)
        values = (1.0 / (1.0 + np.exp(-logits))).tolist()
    own = float(model.threshold)
    first = [own] if math.isfinite(own) else []
    return first + sorted(set(values) - set(first))


def checkpoint_settings(path: str | Path, task: str, method: str) -> RunSettings:
    """The settings a checkpoint was trained with (its run's config.json, two folders up), else the defaults
    for its task and method; the task asked for wins."""
    path = Path(path)
    base: dict = {}
    config = path.parent.parent / "config.json"
    try:
        base = migrate_saved(json.loads(config.read_text())) if config.is_file() else {}
    except (OSError, ValueError):
        base = {}
    overrides = [f"data.task={json.dumps(task)}", f"method={json.dumps(method)}"]
    if not base:
        overrides.append(f"model.name_or_path={json.dumps(str(path))}")
    try:
        return build_settings(base, overrides)
    except HadSkipError:  # a config.json from an incompatible version: fall back to the defaults
        return build_settings({}, overrides + [f"model.name_or_path={json.dumps(str(path))}"])


def _task_data(
    model: GatedModel, task_name: str, data_dir, max_length: int, dev_limit, seed: int
) -> TaskData:
    task = get_task(task_name)
    devs = {
        name: subsample(load_split(task, name, data_dir), dev_limit, seed) for name in dev_split_names(task)
    }
    try:
        train_labels = load_split(task, "train", data_dir).labels
        majority = majority_score(task, train_labels, devs["dev"].labels)
    except HadSkipError:  # a task with no train split here (QNLI): no majority score
        majority = None
    encoded = {name: encode(split, model.tokenizer, max_length) for name, split in devs.items()}
    return TaskData(
        task=task,
        tokenizer=model.tokenizer,
        train=encoded["dev"],
        dev=encoded,
        majority=majority,
        # a curve sets its thresholds from dev scores by design; nothing calibrates here
        calibration=encoded["dev"],
    )


def open_checkpoint(
    checkpoint: str | Path,
    task: str,
    data_dir: str | None,
    runtime: Runtime,
    settings: RunSettings | None = None,
) -> tuple[GatedModel, str, RunSettings, TaskData, dict]:
    """A checkpoint on `runtime`'s device with its method, settings (default: its run's), the task's dev data
    tokenised by its own tokenizer, and its hadskip.json."""
    model = load(checkpoint)
    if model.tokenizer is None:
        raise ConfigError(f"checkpoint {checkpoint} has no tokenizer saved beside it")
    meta = json.loads((Path(checkpoint) / META_FILE).read_text())
    method = model.method if isinstance(model, ExitModel) else "hadskip"
    settings = settings or checkpoint_settings(checkpoint, task, method)
    data = _task_data(
        model,
        task,
        data_dir or settings.data.data_dir,
        settings.data.max_length,
        settings.data.dev_limit,
        settings.seed,
    )
    return model.to(runtime.device), method, settings, data, meta


def trace_curve(
    checkpoint: str | Path,
    task: str,
    *,
    data_dir: str | None = None,
    out: str | None = None,
    runtime: Runtime | None = None,
    options: CurveOptions = CurveOptions(),
    settings: RunSettings | None = None,
    run_id: str | None = None,
    tags: dict | None = None,
) -> list[ResultRow]:
    """Evaluate the checkpoint at every threshold of its curve; write the rows into the results folder `out`
    (default: `<checkpoint>/curve`) and return them, by threshold (no threshold, i.e. every layer, last).

    `settings`: what the model was trained with (default: its run's config.json, else the defaults);
    `run_id` names the curve (a sweep passes a fixed one, so a resumed sweep finds it written); `tags`
    replace columns of every row (a sweep's sweep_id, trial_id, study, the checkpoint's URI)."""
    import torch

    runtime = runtime or Runtime(device=torch.device("cpu"))
    if options.points < 2:
        raise ConfigError(f"--points {options.points} must be at least 2 (a curve needs two ends)")
    if options.latency_rows < 0:
        raise ConfigError(f"--latency-rows {options.latency_rows} must be >= 0 (0: no latency)")
    model, method, settings, data, meta = open_checkpoint(checkpoint, task, data_dir, runtime, settings)
    budget = float(meta.get("metadata", {}).get("budget") or model.num_layers)
    out = out or str(Path(checkpoint) / "curve")
    run_id = run_id or f"curve-{new_run_id()}"
    device = device_name(runtime.device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    timing = dict(
        batch_sizes=list(LATENCY_BATCH_SIZES),
        device=runtime.device,
        repeats=options.repeats,
        max_rows=options.latency_rows,
    )
    # the full model's latency once: every point's speed-up is against it
    full = (
        measure_latency(model, data.dev["dev"], open_gates=True, **timing) if options.latency_rows else None
    )
    rows, seen = [], set()
    for t in thresholds(model, data.dev["dev"], runtime, options.points):
        ev = evaluate(model, data, runtime, options.batch_size, threshold=t)
        key = (
            json.dumps(ev.metrics, sort_keys=True),
            tuple(ev.stats["layer_usage"]),
            tuple(ev.stats["layers_hist"]),
        )
        if key in seen:  # the same point as a threshold already written
            continue
        seen.add(key)
        latency: dict = {}
        if options.latency_rows:
            timed = measure_latency(model, data.dev["dev"], threshold=t, **timing)
            latency = {
                "latency_b1_ms": 1000.0 * timed.seconds[1],
                "latency_b32_ms": 1000.0 * timed.seconds[32],
                "speedup": full.seconds[32] / timed.seconds[32],
                "ideal_speedup": model.num_layers / timed.mean_layers if timed.mean_layers else math.inf,
                "speed_batch_size": 32,
                "device": device,
                "dtype": dtype,
            }
        row = make_row(
            settings,
            run_id=run_id,
            method=method,
            num_layers=model.num_layers,
            budget=budget,
            majority=data.majority,
            metric=ev.metric,
            metrics=ev.metrics,
            layer_stats=ev.stats,
            eval_seconds=ev.seconds,
            checkpoint=str(checkpoint),
            gate_threshold=t if math.isfinite(t) else None,
            role="curve",
            **latency,
        ).model_copy(update=tags or {})
        write_point(out, row, f"{run_id}-{len(rows):02d}")
        rows.append(row)
        log.info(
            "curve %s: threshold %.4g, %s %.4f, mean layers %.2f",
            task,
            t,
            data.task.metric,
            ev.metric,
            ev.stats["mean_layers"],
        )
    return sorted(rows, key=lambda r: math.inf if r.gate_threshold is None else r.gate_threshold)
