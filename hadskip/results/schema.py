"""The results schema: one row per evaluated point, its Arrow types, and the one function that builds a row.

Both `hadskip train` (one `results.parquet`) and the sweep (a folder of per-point files) write this schema
(`hadskip.results.io`).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
import uuid
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from hadskip.config import RunSettings
from hadskip.data.tasks import get_task
from hadskip.errors import HadSkipError
from hadskip.registry import FULL, ResultMethod

SCHEMA_VERSION = (
    3  # v2: speedup, ideal_speedup, speed_batch_size; v3: role, confirms, device, dtype, latencies
)
VERSION_KEY = b"hadskip_schema_version"

Status = Literal["ok", "failed", "stopped"]
# search: a trained point (a sweep trial, a `hadskip train` budget); confirm: the best search configuration
# re-trained with a fresh seed; curve: one inference threshold of a trained checkpoint (`hadskip curve`)
Role = Literal["search", "confirm", "curve"]
ROLES = ("search", "confirm", "curve")

# name, arrow type, meaning
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("schema_version", pa.int32(), "version of this schema the row was written with"),
    ("run_id", pa.string(), "one training run (all its points share it)"),
    ("created_at", pa.timestamp("us", tz="UTC"), "when the row was written"),
    ("task", pa.string(), "GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli"),
    ("method", pa.string(), "full (the stage I model, every layer) or hadskip; early-exit baselines by name"),
    ("model", pa.string(), "backbone: HF id or path"),
    ("num_layers", pa.int32(), "L, layers of the backbone"),
    ("budget", pa.float64(), "expected executed layers asked for (L for the full model)"),
    ("metric_name", pa.string(), "the task's primary GLUE metric"),
    ("metric", pa.float64(), "primary metric on dev"),
    ("metrics", pa.string(), "JSON object of every task metric on every dev split"),
    ("majority_metric", pa.float64(), "primary metric of predicting the majority training label"),
    ("mean_layers", pa.float64(), "mean executed layers per dev sequence"),
    ("layer_usage", pa.list_(pa.float64()), "L floats: fraction of dev sequences that ran layer i"),
    ("layers_hist", pa.list_(pa.int64()), "L+1 ints: dev sequences that ran 0..L layers"),
    (
        "gate_threshold",
        pa.float64(),
        "inference threshold on p(run) (0.5 = argmax; calibrated on training or held-out rows)",
    ),
    ("lr", pa.float64(), "learning rate (stage III for hadskip, stage I for full)"),
    ("batch_size", pa.int64(), "batch size (same stage as lr)"),
    ("beta", pa.float64(), "budget penalty weight, Eq. 3"),
    ("alpha_pred", pa.float64(), "alpha_1, prediction distillation"),
    ("alpha_hidden", pa.float64(), "alpha_2, hidden-state distillation"),
    ("alpha_attn", pa.float64(), "alpha_3, attention distillation"),
    ("alpha_emb", pa.float64(), "alpha_4, embedding distillation"),
    ("seed", pa.int64(), "random seed"),
    ("train_seconds", pa.float64(), "training wall time up to this point (stage I excluded for hadskip)"),
    ("eval_seconds", pa.float64(), "wall time of the dev evaluation"),
    ("speedup", pa.float64(), "measured inference speed-up over the same model with every layer (v2)"),
    ("ideal_speedup", pa.float64(), "L / mean executed layers on the timed rows (v2)"),
    ("speed_batch_size", pa.int64(), "batch size the speed-up was measured at (v2)"),
    ("latency_b1_ms", pa.float64(), "measured ms per sequence at batch 1 (v3, curve points)"),
    ("latency_b32_ms", pa.float64(), "measured ms per sequence at batch 32 (v3, curve points)"),
    ("device", pa.string(), "where speed and latency were measured, e.g. 'cpu (1 thread)' (v3)"),
    ("dtype", pa.string(), "weights' dtype when speed and latency were measured (v3)"),
    ("role", pa.string(), "search, confirm or curve (v3; empty in older files means search)"),
    ("confirms", pa.string(), "a confirm row: trial_id of the search trial whose configuration it re-trains"),
    ("status", pa.string(), "ok, failed or stopped"),
    ("error", pa.string(), "error message of a failed or stopped point"),
    ("checkpoint", pa.string(), "where the model of this point is saved (None when not kept)"),
    ("settings", pa.string(), "JSON of the full run settings"),
    ("sweep_id", pa.string(), "sweep the point belongs to (None for hadskip train)"),
    ("trial_id", pa.string(), "Ray Tune trial id"),
    ("study", pa.string(), "Optuna study name"),
    ("git_commit", pa.string(), "commit of the hadskip source, when known"),
    ("package_versions", pa.string(), "JSON of key package versions"),
]

SCHEMA = pa.schema(
    [pa.field(name, typ, nullable=True, metadata={"doc": doc}) for name, typ, doc in COLUMNS],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)


class ResultsError(HadSkipError):
    """A results path that cannot be read as a results table."""


class ResultRow(BaseModel):
    """One evaluated point; validated before it is written."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    created_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    task: str
    method: ResultMethod
    model: str
    num_layers: int
    budget: float
    metric_name: str
    metric: float | None = None
    metrics: str = "{}"
    majority_metric: float | None = None
    mean_layers: float | None = None
    layer_usage: list[float] | None = None
    layers_hist: list[int] | None = None
    gate_threshold: float | None = None
    lr: float | None = None
    batch_size: int | None = None
    beta: float | None = None
    alpha_pred: float | None = None
    alpha_hidden: float | None = None
    alpha_attn: float | None = None
    alpha_emb: float | None = None
    seed: int | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    speedup: float | None = None
    ideal_speedup: float | None = None
    speed_batch_size: int | None = None
    latency_b1_ms: float | None = None
    latency_b32_ms: float | None = None
    device: str | None = None
    dtype: str | None = None
    role: Role = "search"
    confirms: str | None = None
    status: Status = "ok"
    error: str | None = None
    checkpoint: str | None = None
    settings: str | None = None
    sweep_id: str | None = None
    trial_id: str | None = None
    study: str | None = None
    git_commit: str | None = Field(default_factory=lambda: git_commit())
    package_versions: str | None = Field(
        default_factory=lambda: json.dumps(package_versions(), sort_keys=True)
    )


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@cache
def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("hadskip", "torch", "transformers", "ray", "optuna", "pyarrow"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def hyperparameters(settings: RunSettings, method: str) -> dict[str, Any]:
    """The columns a method's training settings fill: the stage I recipe for the full model, stage III and
    the loss weights for HadSkip, the exit training recipe for a baseline (whose loss weights stay empty)."""
    if method == FULL:
        return {"lr": settings.stage1.lr, "batch_size": settings.stage1.batch_size}
    if method == "hadskip":
        s = settings.stage3
        return {
            "lr": s.lr,
            "batch_size": s.batch_size,
            "beta": s.beta,
            "alpha_pred": s.alpha_pred,
            "alpha_hidden": s.alpha_hidden,
            "alpha_attn": s.alpha_attn,
            "alpha_emb": s.alpha_emb,
        }
    return {"lr": settings.exits.lr, "batch_size": settings.exits.batch_size}


def make_row(
    settings: RunSettings,
    *,
    run_id: str,
    method: str,
    num_layers: int,
    budget: float,
    majority: float | None = None,
    metric: float | None = None,
    metrics: dict[str, float] | None = None,
    layer_stats: dict[str, Any] | None = None,
    **fields: Any,
) -> ResultRow:
    """The one way a results row is built: what the settings say (task, model, seed, the method's
    hyperparameters, the settings JSON), what was measured, and any other column by name (`train_seconds`,
    `eval_seconds`, `checkpoint`, `gate_threshold`, `speedup`, `status`, `error`, `sweep_id`, ...)."""
    task = get_task(settings.data.task)
    stats = layer_stats or {}
    return ResultRow(
        run_id=run_id,
        task=task.name,
        method=method,
        model=settings.model.name_or_path,
        num_layers=num_layers,
        budget=budget,
        metric_name=task.metric,
        metric=metric,
        metrics=json.dumps(metrics or {}, sort_keys=True),
        majority_metric=majority,
        mean_layers=stats.get("mean_layers"),
        layer_usage=stats.get("layer_usage"),
        layers_hist=stats.get("layers_hist"),
        seed=settings.seed if method == FULL else settings.training_seed,
        settings=settings.model_dump_json(),
        **hyperparameters(settings, method),
        **fields,
    )
