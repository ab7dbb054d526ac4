"""Stage I, the vanilla fine-tune: also the teacher, the "full" reference row, and every method's start.

It is cached under a cache folder (a path or a shared-storage URI), keyed by what determines it, so runs and
sweep trials that agree on those share one model. This module is the only one that knows the cache layout:
`<cache>/stage1/<task>-<digest>/` holds the HF checkpoint and tokenizer, and `stage1.json` (written last,
so its presence means the entry is complete) holds its evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hadskip import storage
from hadskip.config import RunSettings
from hadskip.core.loop import fit
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime, seed_everything
from hadskip.core.stages import stage1
from hadskip.data.metrics import layer_stats
from hadskip.registry import FULL
from hadskip.results.schema import ResultRow, make_row
from hadskip.run.backbone import load_classifier
from hadskip.run.task_data import TaskData, evaluate

log = logging.getLogger(__name__)

CACHE_VERSION = 1
INFO_FILE = "stage1.json"


def default_cache_dir() -> str:
    return os.environ.get("HADSKIP_CACHE", str(Path.home() / ".cache" / "hadskip"))


def _source_identity(source: str) -> dict:
    path = Path(source)
    if path.is_dir():
        weights = sorted(
            (p.name, p.stat().st_size) for p in path.iterdir() if p.suffix in {".safetensors", ".bin"}
        )
        return {"path": str(path.resolve()), "weights": weights}
    return {"hub": source}


# Stage I settings added after CACHE_VERSION 1, with the value that computes what the entry was trained with
# before they existed: at that value they stay out of the key, so existing cache entries are still found.
_ADDED_SINCE_V1 = {"clip": "global"}


def _stage1_identity(settings: RunSettings) -> dict:
    ident = settings.stage1.model_dump()
    for key, before in _ADDED_SINCE_V1.items():
        if ident.get(key) == before:
            del ident[key]
    return ident


def stage1_key(settings: RunSettings, source: str) -> str:
    """What determines the stage I model; runs that agree on it share one cached model."""
    d = settings.data
    ident = {
        "version": CACHE_VERSION,
        "model": _source_identity(source),
        "task": d.task,
        "data": {
            "data_dir": d.data_dir and str(Path(d.data_dir).resolve()),
            "max_length": d.max_length,
            "train_limit": d.train_limit,
            **({"holdout_rows": d.holdout_rows} if d.holdout_rows else {}),  # keys from before it still match
        },
        "stage1": _stage1_identity(settings),
        "hidden_dropout": settings.model.hidden_dropout,
        "seed": settings.seed,
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return f"{d.task}-{digest}"


def _entry(cache_dir: str, key: str) -> str:
    return storage.join(cache_dir, "stage1", key)


def cached_info(cache_dir: str, settings: RunSettings, source: str) -> dict | None:
    """The evaluation of the cached stage I model of these settings, or None when it is not cached (or was
    cached before its info held the dev row count and majority score a full row needs)."""
    info_uri = storage.join(_entry(cache_dir, stage1_key(settings, source)), INFO_FILE)
    if not storage.exists(info_uri):
        return None
    info = json.loads(storage.read_bytes(info_uri))
    return info if {"dev_rows", "majority"} <= set(info) else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of one machine (two trials wanting the same stage I)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class Stage1Result:
    path: Path  # local folder of the HF checkpoint
    info: dict  # key, train_seconds, steps, metric, metrics, eval_seconds, source, dev_rows, majority


def ensure_stage1(
    settings: RunSettings, source: str, data: TaskData, runtime: Runtime, cache_dir: str
) -> Stage1Result:
    """Fine-tune the vanilla model (stage I) unless the cache already holds it; return its checkpoint."""
    key = stage1_key(settings, source)
    uri = _entry(cache_dir, key)
    info_uri = storage.join(uri, INFO_FILE)
    lock = (
        _file_lock(Path(storage.resolve(cache_dir)[1]) / "stage1" / f"{key}.lock")
        if runtime.is_main and not storage.is_remote(cache_dir)
        else contextlib.nullcontext()
    )
    with lock:
        if storage.exists(info_uri):
            log.info("stage I: using cached model %s", uri)
            info = json.loads(storage.read_bytes(info_uri))
            # entries written before dev_rows and majority were recorded get them from this run's data
            info = {"dev_rows": len(data.dev["dev"]), "majority": data.majority, **info}
            return Stage1Result(storage.local_dir_for(uri), info)

        seed_everything(settings.seed)
        model = GatedModel(load_classifier(source, data.task, settings), settings.gates.hidden_size)
        model = model.to(runtime.device)
        runtime.broadcast_module(model)
        stats = fit(model, stage1(settings.stage1), data.train, runtime, seed=settings.seed)
        ev = evaluate(model, data, runtime, settings.eval_batch_size, open_gates=True)
        info = {
            "key": key,
            "train_seconds": stats.seconds,
            "steps": stats.steps,
            "metric": ev.metric,
            "metrics": ev.metrics,
            "eval_seconds": ev.seconds,
            "source": source,
            "dev_rows": len(data.dev["dev"]),
            "majority": data.majority,
        }
        local = (
            Path(tempfile.mkdtemp(prefix="hadskip-stage1-"))
            if storage.is_remote(cache_dir)
            else Path(storage.resolve(uri)[1])
        )
        if runtime.is_main:
            with model.unwrapped() as hf:
                hf.save_pretrained(local, safe_serialization=True)
            data.tokenizer.save_pretrained(local)
            storage.upload_dir(local, uri)
            storage.write_bytes_atomic(info_uri, json.dumps(info, indent=2).encode())
        runtime.barrier()
        if not runtime.is_main:
            local = storage.local_dir_for(uri)
        return Stage1Result(local, info)


def full_row(settings: RunSettings, info: dict, num_layers: int, *, run_id: str) -> ResultRow:
    """The stage I model's row (method "full", budget L, every layer run) from its cache entry's info."""
    return make_row(
        settings,
        run_id=run_id,
        method=FULL,
        num_layers=num_layers,
        budget=float(num_layers),
        majority=info["majority"],
        metric=info["metric"],
        metrics=info["metrics"],
        layer_stats=layer_stats(np.ones((info["dev_rows"], num_layers), bool)),
        train_seconds=info["train_seconds"],
        eval_seconds=info["eval_seconds"],
    )
