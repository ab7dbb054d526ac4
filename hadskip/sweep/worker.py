"""The Ray Train worker: one worker of a trial (or of a task's stage I run), running `train_run` on its rank.

After each budget on the homotopic path, rank 0 writes the point to the results dataset and every rank
reports it (Ray Train forwards rank 0's report to Tune through `TuneReportCallback`).
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from pathlib import Path

from hadskip import storage
from hadskip.config import RunSettings
from hadskip.core.runtime import Runtime, TrainingDiverged
from hadskip.registry import FULL
from hadskip.results.io import point_exists, write_point
from hadskip.results.schema import ResultRow
from hadskip.run.backbone import num_layers_of, resolve_model_source
from hadskip.run.run_dir import RunState
from hadskip.run.stage1 import ensure_stage1, full_row
from hadskip.run.task_data import load_task_data
from hadskip.run.train import train_run
from hadskip.sweep.rows import full_point_name, point_name, tag, unfinished_rows
from hadskip.sweep.settings import OVER_BUDGET_SCORE, SweepSettings, objective

log = logging.getLogger(__name__)

METRIC = "objective"  # what Optuna maximises and ASHA compares
TIME_ATTR = "points"  # budgets evaluated so far: ASHA's clock
DIVERGED = "diverged: "  # error prefix of a trial whose loss went NaN (not resumable, unlike an errored one)


def _runtime() -> Runtime:
    import ray.train
    import ray.train.torch

    train_context = ray.train.get_context()
    return Runtime(
        device=ray.train.torch.get_device(),
        rank=train_context.get_world_rank(),
        world_size=train_context.get_world_size(),
        progress=False,
    )


def _node_id() -> str:
    """The Ray node this worker runs on: a sweep's run folders say which node trained which trial."""
    import ray

    return ray.get_runtime_context().get_node_id()


def stage1_worker(sweep: SweepSettings, settings: RunSettings, runtime: Runtime) -> None:
    """Fine-tune (or find cached) a task's stage I model and write the sweep's full-model row."""
    import ray.train

    source = resolve_model_source(settings.model.name_or_path)
    data = load_task_data(settings, source)
    stage1 = ensure_stage1(settings, source, data, runtime, sweep.cache)
    if runtime.is_main:
        name = full_point_name(sweep, stage1.info["key"])
        row = full_row(settings, stage1.info, num_layers_of(source), run_id=name)
        write_point(sweep.results, tag(row, sweep, name, settings.data.task), name)
    ray.train.report({"stage1_metric": stage1.info["metric"]})


def _log_to_run_folder(run_uri: str, runtime: Runtime) -> None:
    """The trial's step lines into `<run>/train.log` (main worker, storage on a filesystem path); with remote
    storage they stay in Ray's worker logs. The console shows them only with --verbose."""
    if runtime.is_main and not storage.is_remote(run_uri):
        path = Path(storage.resolve(run_uri)[1]) / "train.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        root = logging.getLogger()
        for old in [h for h in root.handlers if h.get_name() == "hadskip-trial"]:  # a reused worker process
            root.removeHandler(old)
            old.close()
        handler = logging.FileHandler(path)
        handler.set_name("hadskip-trial")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)


def worker_loop(cfg: dict) -> None:
    """One Ray Train worker of a trial (or of a task's stage I run when cfg["stage1_only"])."""
    import ray.train

    if not logging.getLogger().handlers:  # step logs every `log_every` steps reach the driver's console
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
    sweep = SweepSettings.model_validate_json(cfg["sweep"])
    settings = RunSettings.model_validate_json(cfg["settings"])
    runtime = _runtime()
    task = settings.data.task
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
    if cfg.get("stage1_only"):
        stage1_worker(sweep, settings, runtime)
        return

    trial_id = cfg["trial_id"]
    run_uri = storage.join(sweep.root, "runs", trial_id)
    _log_to_run_folder(run_uri, runtime)
    # from TorchTrainer creation to this line: the worker group start Ray Train adds to every trial
    start_s = time.time() - cfg["created"]
    log.info("trial %s: Ray Train workers started in %.1f s", trial_id, start_s)
    if runtime.is_main:
        storage.write_bytes_atomic(
            storage.join(run_uri, "timing.json"),
            json.dumps(
                {"worker_start_s": start_s, "node_id": _node_id(), "host": socket.gethostname()}
            ).encode(),
        )
    if cfg.get("fault") == "nan":  # test hook: HadSkip's loss, or a baseline's weights, go NaN
        settings = settings.model_copy(
            update={
                "stage3": settings.stage3.model_copy(update={"beta": math.nan}),
                "exits": settings.exits.model_copy(update={"lr": math.nan, "head_lr": math.nan}),
            }
        )
    points: list[tuple[float, float | None, float | None]] = []
    reported = []
    state_uri = storage.join(run_uri, "state.json")
    resumed = storage.exists(state_uri)
    if resumed:  # a restarted trial: count the points it finished, and publish any the kill cut off
        for raw in RunState.from_json(storage.read_bytes(state_uri)).rows:
            row = tag(ResultRow(**raw), sweep, trial_id, task, cfg["config"])
            if row.method == FULL:
                continue
            points.append((row.budget, row.metric, row.mean_layers))
            if runtime.is_main and not point_exists(sweep.results, row, point_name(trial_id)):
                write_point(sweep.results, row, point_name(trial_id))

    def on_point(row: ResultRow, _checkpoint) -> None:
        if row.method == FULL:  # the stage I run of the task writes that row once
            return
        row = tag(row, sweep, trial_id, task, cfg["config"])
        if runtime.is_main:
            write_point(sweep.results, row, point_name(trial_id))
        points.append((row.budget, row.metric, row.mean_layers))
        reported.append(row.budget)
        ray.train.report(
            {
                METRIC: objective(points, sweep.tolerance),
                TIME_ATTR: len(points),
                "budget": row.budget,
                "metric": row.metric,
                "mean_layers": row.mean_layers,
                "within_budget": row.mean_layers <= row.budget + sweep.tolerance,
            }
        )

    try:
        train_run(
            settings, run_uri, runtime=runtime, cache_dir=sweep.cache, resume=resumed, on_point=on_point
        )
        if not reported:  # every point was done before the restart: Tune still needs a final result
            ray.train.report({METRIC: objective(points, sweep.tolerance), TIME_ATTR: len(points)})
    except TrainingDiverged as err:  # a bad hyperparameter point, not a broken worker: record, do not retry
        log.warning("trial %s diverged: %s", trial_id, err)
        if runtime.is_main:
            error = f"{DIVERGED}{err}"
            for row in unfinished_rows(
                sweep, task, cfg["config"], trial_id, cfg["num_layers"], "failed", error, settings.method
            ):
                write_point(sweep.results, row, point_name(trial_id))
        ray.train.report({METRIC: OVER_BUDGET_SCORE, TIME_ATTR: len(sweep.budgets), "diverged": True})
