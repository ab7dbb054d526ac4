"""The results schema (one row per evaluated point), its Parquet writer and reader.

Both `hadskip train` (one `results.parquet`) and the sweep (a folder of per-point files, partitioned by task
and budget) write this schema. Files are written whole (temp file + rename) so a reader never sees half a
file, and a reader may query while a sweep is still writing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import platform
import subprocess
import uuid
from functools import cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from hadskip import storage
from hadskip.errors import HadSkipError

SCHEMA_VERSION = 2  # v2: speedup, ideal_speedup, speed_batch_size
_VERSION_KEY = b"hadskip_schema_version"

STATUSES = ("ok", "failed", "stopped")
METHODS = ("full", "hadskip", "static", "entropy", "pabee", "berxit", "leebert")

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
        "inference threshold on p(run) (0.5 = argmax; calibrated on train data)",
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
    metadata={_VERSION_KEY: str(SCHEMA_VERSION).encode()},
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
    method: str
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
    status: str = "ok"
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


def rows_to_table(rows: list[ResultRow | dict[str, Any]]) -> pa.Table:
    records = [(r if isinstance(r, ResultRow) else ResultRow(**r)).model_dump() for r in rows]
    return pa.Table.from_pylist(records, schema=SCHEMA)


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_table(rows: list[ResultRow | dict[str, Any]], uri: str) -> None:
    """Write `rows` as one Parquet file, atomically."""
    storage.write_bytes_atomic(str(uri), _table_bytes(rows_to_table(rows)))


def point_file(root: str, row: ResultRow, name: str) -> str:
    """Where a sweep point lives: <root>/task=<task>/budget=<budget>/<name>.parquet."""
    return storage.join(str(root), f"task={row.task}", f"budget={row.budget:g}", f"{name}.parquet")


def write_point(root: str, row: ResultRow, name: str) -> str:
    """Add one point to a results dataset folder (append-only: one file per point)."""
    uri = point_file(root, row, name)
    write_table([row], uri)
    return uri


def _check_version(schema: pa.Schema, where: str) -> None:
    raw = (schema.metadata or {}).get(_VERSION_KEY)
    if raw is not None and int(raw) > SCHEMA_VERSION:
        raise ResultsError(
            f"{where} was written with results schema v{int(raw)}; this hadskip reads up to v{SCHEMA_VERSION} "
            "(upgrade hadskip)"
        )


def read_table(uri: str | Path) -> pa.Table:
    """Read a results file or a results folder (only complete files: temp files start with '.')."""
    fs, path = storage.resolve(str(uri))
    info = fs.get_file_info(path)
    if info.type == storage.pafs.FileType.NotFound:
        raise ResultsError(f"no results at {uri!s}: the path does not exist")
    if info.type == storage.pafs.FileType.File:
        files = [path]
    else:
        selector = storage.pafs.FileSelector(path, recursive=True)
        files = sorted(
            f.path
            for f in fs.get_file_info(selector)
            if f.type == storage.pafs.FileType.File
            and f.path.endswith(".parquet")
            and not any(part.startswith((".", "_")) for part in f.path[len(path) :].split("/"))
        )
    if not files:
        raise ResultsError(f"no results at {uri!s}: no .parquet files there")
    tables = []
    for f in files:
        try:
            t = pq.read_table(f, filesystem=fs, partitioning=None)
        except Exception as err:  # noqa: BLE001
            raise ResultsError(f"{f} is not a readable Parquet file ({type(err).__name__})") from None
        _check_version(t.schema, f)
        tables.append(t)
    table = pa.concat_tables(tables, promote_options="permissive")
    missing = [n for n, _, _ in COLUMNS if n not in table.column_names]
    for name in missing:
        table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    return table


def read_results(uri: str | Path):
    """Results as a pandas DataFrame."""
    return read_table(uri).to_pandas()


def best_points(df, sweep_id: str | None = None, tolerance: float = 0.25):
    """Per task and budget, the best valid point (status ok, mean layers <= budget + tolerance), plus the
    full model's row; with `n_points` (all points) and `n_invalid` (failed, stopped or over budget)."""
    import pandas as pd

    if sweep_id is not None:
        df = df[df.sweep_id == sweep_id]
    df = df.copy()
    df["valid"] = (df.status == "ok") & ((df.method == "full") | (df.mean_layers <= df.budget + tolerance))
    out = []
    for _, group in df.groupby(["task", "method", "budget"], sort=True):
        valid = group[group.valid]
        best = valid.loc[valid.metric.idxmax()] if len(valid) else group.iloc[0]
        rec = best.to_dict()
        rec.update(n_points=len(group), n_invalid=int((~group.valid).sum()), found=bool(len(valid)))
        out.append(rec)
    cols = ["task", "method", "budget", "metric_name", "metric", "mean_layers", "trial_id", "lr", "batch_size",
            "beta", "alpha_pred", "alpha_hidden", "alpha_attn", "alpha_emb", "n_points", "n_invalid", "found",
            "checkpoint", "num_layers", "layer_usage", "layers_hist", "sweep_id", "study"]  # fmt: skip
    table = pd.DataFrame(out, columns=cols) if out else pd.DataFrame(columns=cols)
    return table.sort_values(["task", "budget"], ascending=[True, False]).reset_index(drop=True)


_REPORT_API = ("summary", "format_summary", "query", "report", "importances", "pareto_front")


def __getattr__(name: str):
    """`hadskip.results.summary`, `.query`, `.report`, ... live in hadskip.report (DuckDB and matplotlib
    load only when used)."""
    if name in _REPORT_API:
        from hadskip import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
