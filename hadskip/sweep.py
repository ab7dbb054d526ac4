"""Ray sweeps: Ray Tune + Optuna over HadSkip's hyperparameters, each trial a Ray Train run of the three stages.

Three layers, as in Ray's own examples:
- `worker_loop` runs on every Ray Train worker: `train_run` with a `Runtime` on the worker's rank. After
  each budget on the homotopic path, rank 0 writes the point to the results dataset and every rank reports it
  (Ray Train forwards rank 0's report to Tune through `TuneReportCallback`).
- `run_trial` is the Tune function trainable: it builds the `TorchTrainer` of one trial and runs it.
- `run_sweep` is the driver: it connects to Ray, fine-tunes stage I once per task, runs one `Tuner` with one
  named Optuna study per task, records stopped and failed trials, and returns the best point per budget.

Everything a restarted trial or driver needs lives under `storage` and `results` (paths or shared-storage
URIs): Tune's experiment state, each trial's run folder (`state.json` + safetensors checkpoints), the stage I
cache, and the Parquet dataset. Nothing is held only in one process's memory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hadskip import storage
from hadskip.config import RunSettings, build_settings, check_budgets
from hadskip.errors import ConfigError, HadSkipError
from hadskip.results import ResultRow, best_points, point_file, read_results, write_point
from hadskip.tasks import TASKS, available_tasks, get_task

log = logging.getLogger(__name__)

METRIC = "objective"  # what Optuna maximises and ASHA compares
TIME_ATTR = "points"  # budgets evaluated so far: ASHA's clock
DIVERGED = "diverged: "  # error prefix of a trial whose loss went NaN (not resumable, unlike an errored one)
OVER_BUDGET_SCORE = -1.0  # an over-budget point counts as this, below any metric a feasible point can have

# Optuna's space per hyperparameter: the setting it sets, and its distribution. Ranges follow the paper
# (lr 5e-6..5e-5, batch 8..64, loss weights around 1.0); beta reaches up to 100 because the paper's 1.0 does
# not bind here (README, "departures").
SPACE: dict[str, tuple[str, tuple]] = {
    "stage3.lr": ("loguniform", (5e-6, 5e-5)),
    "stage3.batch_size": ("choice", ([8, 16, 32, 64],)),
    "stage3.beta": ("loguniform", (1.0, 100.0)),
    "stage3.alpha_pred": ("loguniform", (0.1, 10.0)),
    "stage3.alpha_hidden": ("loguniform", (0.1, 10.0)),
    "stage3.alpha_attn": ("loguniform", (0.1, 10.0)),
    "stage3.alpha_emb": ("loguniform", (0.1, 10.0)),
}

# The early-exit baselines search their own hyperparameters (hadskip.methods); the ranges follow their
# papers (LeeBERT: weight lr 1e-5..5e-3, cycle 2/4/8).
_EXIT_LR = {"exits.lr": ("loguniform", (5e-6, 5e-5)), "exits.batch_size": ("choice", ([8, 16, 32, 64],))}
_HEAD_LR = {"exits.head_lr": ("loguniform", (1e-4, 3e-3))}
METHOD_SPACES: dict[str, dict[str, tuple[str, tuple]]] = {
    "hadskip": SPACE,
    "static": _EXIT_LR,
    "entropy": {"exits.batch_size": _EXIT_LR["exits.batch_size"], **_HEAD_LR},  # backbone frozen
    "pabee": {**_EXIT_LR, **_HEAD_LR},
    "berxit": {**_EXIT_LR, **_HEAD_LR},
    "leebert": {**_EXIT_LR, **_HEAD_LR, "exits.weight_lr": ("loguniform", (1e-5, 5e-3)),
                "exits.cycle": ("choice", ([2, 4, 8],))},
}  # fmt: skip

# --smoke-test: a real sweep (real weights, real GLUE rows) shrunk to minutes on a laptop CPU.
SMOKE_TASKS = "sst2,mrpc"  # SST-2 is learnt from a few hundred rows; MRPC shows a pair task
SMOKE_OVERRIDES = [
    "data.train_limit=512", "data.dev_limit=256", "data.max_length=64", "stage1.epochs=2",
    "stage1.batch_size=16", "stage2.max_steps=8", "stage3.max_steps=8", "stage3.calibration_rows=256",
]  # fmt: skip


class SweepSettings(BaseModel):
    """Everything that defines a sweep; validated once in the driver and shipped to every trial."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("glue-sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    tasks: list[str]
    budgets: list[float]
    methods: list[str] = ["hadskip"]  # hadskip and/or early-exit baselines, each its own study per task
    model: str = "minilm-l6"
    data_dir: str | None = None
    trials_per_task: int = Field(8, ge=1)
    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    max_concurrent: int | None = Field(None, ge=1)
    storage: str = "sweep-state"  # Tune state, trial runs, stage I cache (a path or a URI)
    results: str = "results"  # the Parquet dataset (a path or a URI)
    address: str | None = None  # None: start a local Ray; "auto" or ray://...: join a cluster
    resume: bool = False
    tolerance: float = Field(0.25, ge=0)  # a point is valid when mean layers <= budget + tolerance
    scheduler: Literal["asha", "fifo"] = "asha"
    max_failures: int = Field(1, ge=0)  # Ray Train restarts of a trial whose worker died
    overrides: list[str] = []  # --set for every run (stage I and the fixed parts of stage III)
    keep_checkpoints: Literal["best", "all"] = "best"
    speed_batch_size: int | None = Field(32, ge=1)  # every point's measured speed-up at this batch; None: off
    fault: str | None = None  # test hook: "nan@<trial index>" makes that trial's loss NaN

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        for m in methods:
            if m not in METHOD_SPACES:
                raise ValueError(f"method {m!r} is unknown; known: {', '.join(METHOD_SPACES)}")
        if not methods:
            raise ValueError(f"no method given; known: {', '.join(METHOD_SPACES)}")
        return list(dict.fromkeys(methods))

    @field_validator("storage", "results")
    @classmethod
    def _absolute(cls, uri: str) -> str:  # Ray needs absolute local paths; workers may run elsewhere
        return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))

    @property
    def root(self) -> str:
        return storage.join(self.storage, self.name)

    @property
    def cache(self) -> str:
        return storage.join(self.storage, "stage1-cache")

    def study(self, task: str, method: str = "hadskip") -> str:
        """One Optuna study per task and method (HadSkip's keeps the plain name)."""
        return f"{self.name}-{task}" if method == "hadskip" else f"{self.name}-{task}-{method}"

    def base_settings(self, task: str) -> RunSettings:
        flags = [f"data.task={json.dumps(task)}", f"model.name_or_path={json.dumps(self.model)}",
                 f"budgets={json.dumps(self.budgets)}"]  # fmt: skip
        if self.data_dir:
            flags.append(f"data.data_dir={json.dumps(self.data_dir)}")
        if self.speed_batch_size:
            flags.append(f"speed_batch_size={self.speed_batch_size}")
        if self.workers_per_trial == 1 and self.gpus_per_worker == 0:
            flags.append(f"threads={max(1, int(self.cpus_per_worker))}")
        return build_settings({}, flags + self.overrides)

    def space(self, method: str = "hadskip") -> dict[str, tuple[str, tuple]]:
        """The searched hyperparameters of a method: its space less those the user fixed with --set."""
        fixed = {o.split("=", 1)[0].strip() for o in self.overrides}
        return {k: v for k, v in METHOD_SPACES[method].items() if k not in fixed}

    def pairs(self) -> list[tuple[str, str]]:
        """(task, method) pairs the sweep runs: a method that cannot serve a regression task skips it."""
        from hadskip.methods import METHODS

        return [
            (t, m) for t in self.tasks for m in self.methods
            if m == "hadskip" or not get_task(t).is_regression or METHODS[m].regression
        ]  # fmt: skip


def resolve_tasks(spec: str, data_dir: str | None) -> list[str]:
    """`all` (every GLUE task the data source has) or a comma list of task names."""
    if spec.strip() == "all":
        tasks = available_tasks(data_dir) if data_dir else list(TASKS)
        if not tasks:
            raise ConfigError(f"--tasks all: no GLUE task folders found in {data_dir!r}")
        return tasks
    tasks = [t.strip().lower() for t in spec.split(",") if t.strip()]
    if not tasks:
        raise ConfigError("--tasks is empty; give 'all' or a comma list such as cola,mrpc")
    return [get_task(t).name for t in tasks]


def trial_settings(
    sweep: SweepSettings, task: str, config: dict[str, Any], method: str = "hadskip"
) -> RunSettings:
    """The run settings of one trial: the sweep's base, the method, and Optuna's suggestions."""
    base = json.loads(sweep.base_settings(task).model_dump_json())
    flags = [f"method={json.dumps(method)}"]
    return build_settings(
        base, flags + [f"{k}={json.dumps(v)}" for k, v in config.items() if k in METHOD_SPACES[method]]
    )


def objective(points: list[tuple[float, float | None, float | None]], tolerance: float) -> float:
    """Mean over the budgets done so far of the dev metric, an over-budget (or failed) point counting as
    OVER_BUDGET_SCORE: one trial serves every budget, so Optuna and ASHA rank it on all of them."""
    if not points:
        return OVER_BUDGET_SCORE
    scores = [
        metric if metric is not None and layers is not None and layers <= budget + tolerance else OVER_BUDGET_SCORE
        for budget, metric, layers in points
    ]  # fmt: skip
    return sum(scores) / len(scores)


# -- rows ------------------------------------------------------------------------------------------------


def point_name(trial_id: str) -> str:
    """File name of a trial's point inside its task=/budget= partition: one file per (trial, budget), so a
    rewritten point replaces itself and resuming never duplicates."""
    return trial_id


def tag(row: ResultRow, sweep: SweepSettings, trial_id: str, task: str) -> ResultRow:
    study = sweep.study(task, row.method) if row.method != "full" else sweep.study(task)
    return row.model_copy(update={"sweep_id": sweep.name, "trial_id": trial_id, "study": study})


def unfinished_rows(
    sweep: SweepSettings, task: str, config: dict, trial_id: str, num_layers: int, status: str, error: str,
    method: str = "hadskip",
) -> list[ResultRow]:  # fmt: skip
    """Rows for the budgets a trial did not reach (it failed or was stopped), unless already written."""
    settings = trial_settings(sweep, task, config, method)
    s3, t = settings.stage3, get_task(task)
    if method == "hadskip":
        hyper = dict(lr=s3.lr, batch_size=s3.batch_size, beta=s3.beta, alpha_pred=s3.alpha_pred,
                     alpha_hidden=s3.alpha_hidden, alpha_attn=s3.alpha_attn, alpha_emb=s3.alpha_emb)  # fmt: skip
    else:
        hyper = dict(lr=settings.exits.lr, batch_size=settings.exits.batch_size)
    rows = []
    for budget in check_budgets(sweep.budgets, num_layers):
        row = ResultRow(
            run_id=trial_id, task=t.name, method=method, model=settings.model.name_or_path,
            num_layers=num_layers, budget=budget, metric_name=t.metric, seed=settings.seed, status=status,
            error=error, settings=settings.model_dump_json(), **hyper,
        )  # fmt: skip
        row = tag(row, sweep, trial_id, task)
        if not storage.exists(point_file(sweep.results, row, point_name(trial_id))):
            rows.append(row)
    return rows


# -- Ray Train worker ------------------------------------------------------------------------------------


def worker_loop(cfg: dict) -> None:
    """One Ray Train worker of a trial (or of a task's stage I run when cfg["stage1_only"])."""
    import ray.train
    import ray.train.torch

    from hadskip.pipeline import RunState, ensure_stage1, load_task_data, resolve_model_source, train_run
    from hadskip.train import Runtime, TrainingDiverged

    if not logging.getLogger().handlers:  # step logs every `log_every` steps reach the driver's console
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
    ctx = ray.train.get_context()
    sweep = SweepSettings.model_validate_json(cfg["sweep"])
    settings = RunSettings.model_validate_json(cfg["settings"])
    runtime = Runtime(
        device=ray.train.torch.get_device(),
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        progress=False,
    )
    task = settings.data.task
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)

    if cfg.get("stage1_only"):
        from hadskip.pipeline import num_layers_of, stage1_full_row, with_data_info

        source = resolve_model_source(settings.model.name_or_path)
        data = load_task_data(settings, source)
        stage1 = ensure_stage1(settings, source, data, runtime, sweep.cache)
        if runtime.is_main:
            name = full_point_name(sweep, stage1.info["key"])
            row = stage1_full_row(
                settings, with_data_info(stage1.info, data), num_layers_of(source), run_id=name
            )
            write_point(sweep.results, tag(row, sweep, name, task), name)
        ray.train.report({"stage1_metric": stage1.info["metric"]})
        return

    trial_id = cfg["trial_id"]
    run_uri = storage.join(sweep.root, "runs", trial_id)
    # from TorchTrainer creation to this line: the worker group start Ray Train adds to every trial
    start_s = time.time() - cfg["created"]
    log.info("trial %s: Ray Train workers started in %.1f s", trial_id, start_s)
    if runtime.is_main:
        storage.write_bytes_atomic(
            storage.join(run_uri, "timing.json"), json.dumps({"worker_start_s": start_s}).encode()
        )
    if cfg.get("fault") == "nan":
        settings = settings.model_copy(update={  # HadSkip's loss, or a baseline's weights, go NaN
            "stage3": settings.stage3.model_copy(update={"beta": math.nan}),
            "exits": settings.exits.model_copy(update={"lr": math.nan, "head_lr": math.nan}),
        })  # fmt: skip
    points: list[tuple[float, float | None, float | None]] = []
    reported = []
    state_uri = storage.join(run_uri, "state.json")
    resumed = storage.exists(state_uri)
    if resumed:  # a restarted trial: count the points it finished, and publish any the kill cut off
        for raw in RunState.from_json(storage.read_bytes(state_uri)).rows:
            row = tag(ResultRow(**raw), sweep, trial_id, task)
            if row.method == "full":
                continue
            points.append((row.budget, row.metric, row.mean_layers))
            if runtime.is_main and not storage.exists(point_file(sweep.results, row, point_name(trial_id))):
                write_point(sweep.results, row, point_name(trial_id))

    def on_point(row: ResultRow, _ckpt) -> None:
        if row.method == "full":  # the stage I run of the task writes that row once
            return
        row = tag(row, sweep, trial_id, task)
        if runtime.is_main:
            write_point(sweep.results, row, point_name(trial_id))
        points.append((row.budget, row.metric, row.mean_layers))
        reported.append(row.budget)
        ray.train.report({
            METRIC: objective(points, sweep.tolerance), TIME_ATTR: len(points), "budget": row.budget,
            "metric": row.metric, "mean_layers": row.mean_layers,
            "within_budget": row.mean_layers <= row.budget + sweep.tolerance,
        })  # fmt: skip

    try:
        train_run(
            settings,
            run_uri,
            runtime=runtime,
            cache_dir=sweep.cache,
            resume=resumed,
            on_point=on_point,
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


# -- Tune trainable --------------------------------------------------------------------------------------


def _scaling(sweep: SweepSettings):
    from ray.train import ScalingConfig

    per_worker = {"CPU": sweep.cpus_per_worker}
    if sweep.gpus_per_worker:
        per_worker["GPU"] = sweep.gpus_per_worker
    return ScalingConfig(
        num_workers=sweep.workers_per_trial,
        use_gpu=sweep.gpus_per_worker > 0,
        resources_per_worker=per_worker,
    )


def _train_run_config(sweep: SweepSettings, name: str, callbacks: list):
    from ray.train import FailureConfig, RunConfig

    return RunConfig(
        name=name,  # the trial id, never a timestamp, so a restored trial finds its run again
        storage_path=storage.join(sweep.root, "train"),
        callbacks=callbacks,
        failure_config=FailureConfig(max_failures=sweep.max_failures, controller_failure_limit=2),
    )


def run_trial(config: dict, *, sweep_json: str, task: str, num_layers: int, method: str = "hadskip") -> None:
    """One Tune trial: a TorchTrainer running the method (HadSkip's stages, or a baseline) with this trial's
    hyperparameters."""
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    sweep = SweepSettings.model_validate_json(sweep_json)
    trial_id = tune.get_context().get_trial_id()
    settings = trial_settings(sweep, task, config, method)
    fault = None
    if sweep.fault:  # test hook: Tune's trial folder is named <trainable>_<trial id>_<trial index>_<params>
        kind, _, index = sweep.fault.partition("@")
        if re.search(rf"_{trial_id}_{int(index)}_", os.path.basename(tune.get_context().get_trial_dir())):
            fault = kind
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "created": time.time(),
            "sweep": sweep_json,
            "settings": settings.model_dump_json(),
            "trial_id": trial_id,
            "config": config,
            "num_layers": num_layers,
            "fault": fault,
        },  # fmt: skip
        scaling_config=_scaling(sweep),
        run_config=_train_run_config(sweep, trial_id, [TuneReportCallback()]),
    )
    trainer.fit()


class PointBookkeeper:
    """Driver-side Tune callback: a trial that ends before its last budget (stopped by ASHA, or errored)
    still gets a row for every budget it did not reach, with its status and error."""

    def __init__(self, sweep: SweepSettings, task: str, num_layers: int, method: str = "hadskip"):
        from ray.tune import Callback

        class _Callback(Callback):
            def on_trial_complete(cb, iteration, trials, trial, **info):  # noqa: N805
                self.record(trial, "stopped", "stopped early by the scheduler (ASHA) before this budget")

            def on_trial_error(cb, iteration, trials, trial, **info):  # noqa: N805
                self.record(trial, "failed", _error_text(trial))

        self.sweep, self.task, self.num_layers, self.method = sweep, task, num_layers, method
        self.callback = _Callback()

    def record(self, trial, status: str, error: str) -> None:
        config = {k: v for k, v in trial.config.items() if k in METHOD_SPACES[self.method]}
        try:
            rows = unfinished_rows(
                self.sweep, self.task, config, trial.trial_id, self.num_layers, status, error, self.method
            )
        except HadSkipError as err:
            log.warning("could not record trial %s as %s: %s", trial.trial_id, status, err)
            return
        for row in rows:
            write_point(self.sweep.results, row, point_name(trial.trial_id))


def _error_text(trial) -> str:
    try:
        err = trial.get_pickled_error() or trial.get_error()
    except Exception:  # noqa: BLE001 - the error file itself may be unreadable
        err = None
    text = f"{type(err).__name__}: {err}" if err is not None else "trial errored (see Ray logs)"
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1][:500] if lines else text[:500]


# -- driver ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(sweep: SweepSettings, num_cpus: int | None = None) -> None:
    """Join the cluster at --address, or start a private local Ray (the embedded default).

    The local Ray keeps its dashboard on 127.0.0.1 (Ray Train frees the workers of ASHA-stopped trials through
    the state API, which needs it) and points the state API at it explicitly, so a stale Ray left by another
    process on this machine is never picked up.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")  # a stuck start fails, never hangs
    env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"]}
    if sweep.address:
        ray.init(address=sweep.address, runtime_env={"env_vars": env}, log_to_driver=True)
        return
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=True,
        runtime_env={"env_vars": env},
    )


def full_point_name(sweep: SweepSettings, stage1_key: str) -> str:
    """File (and trial id) of a sweep's stage I row: one per sweep and stage I model."""
    return f"{sweep.name}-stage1-{stage1_key}"


def prepare_stage1(sweep: SweepSettings, task: str, num_layers: int) -> None:
    """Fine-tune stage I of a task once, on the same kind of workers as the trials, before they start, and
    write the sweep's full-model row. A cached stage I only needs its row: the driver writes it directly."""
    from ray.train.torch import TorchTrainer

    from hadskip.pipeline import resolve_model_source, stage1_full_row, stage1_key

    settings = sweep.base_settings(task)
    key = stage1_key(settings, resolve_model_source(settings.model.name_or_path))
    name = full_point_name(sweep, key)
    info_uri = storage.join(sweep.cache, "stage1", key, "stage1.json")
    if storage.exists(info_uri):
        info = json.loads(storage.read_bytes(info_uri))
        if {"dev_rows", "majority"} <= set(info):
            row = tag(stage1_full_row(settings, info, num_layers, run_id=name), sweep, name, task)
            if not storage.exists(point_file(sweep.results, row, name)):
                write_point(sweep.results, row, name)
            return
    log.info("%s: stage I (fine-tuning the full model; shared by every trial)", task)
    TorchTrainer(
        worker_loop,
        train_loop_config={
            "sweep": sweep.model_dump_json(),
            "settings": settings.model_dump_json(),
            "stage1_only": True,
            "num_layers": num_layers,
        },  # fmt: skip
        scaling_config=_scaling(sweep),
        run_config=_train_run_config(sweep, f"stage1-{task}", []),
    ).fit()


def _tune_space(space: dict[str, tuple[str, tuple]]) -> dict:
    from ray import tune

    make = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice}
    return {key: make[kind](*args) for key, (kind, args) in space.items()}


def experiment_name(task: str, method: str) -> str:
    return f"tune-{task}" if method == "hadskip" else f"tune-{task}-{method}"


def _tuner(sweep: SweepSettings, task: str, num_layers: int, method: str = "hadskip"):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, sweep_json=sweep.model_dump_json(), task=task, num_layers=num_layers, method=method
        ),
        {"CPU": 0.25},  # the trial only waits on its Train workers, which hold the real resources
    )
    path = storage.join(sweep.root, experiment_name(task, method))
    from ray.tune import Tuner

    if Tuner.can_restore(path):
        log.info("%s %s: resuming the Tune experiment at %s", task, method, path)
        return Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    n = len(sweep.budgets)
    scheduler = (
        ASHAScheduler(time_attr=TIME_ATTR, max_t=n, grace_period=1, reduction_factor=2)
        if sweep.scheduler == "asha" and n > 1
        else FIFOScheduler()
    )
    space = sweep.space(method)
    # every searched setting fixed with --set: nothing for Optuna to search, the trials are plain repeats
    searcher = (
        OptunaSearch(study_name=sweep.study(task, method), seed=sweep_seed(sweep, task)) if space else None
    )
    return tune.Tuner(
        trainable,
        param_space=_tune_space(space),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=sweep.trials_per_task,
            max_concurrent_trials=sweep.max_concurrent or _default_concurrency(sweep),
        ),
        run_config=tune.RunConfig(
            name=experiment_name(task, method),
            storage_path=sweep.root,
            callbacks=[PointBookkeeper(sweep, task, num_layers, method).callback],
            verbose=1,
        ),
    )


def sweep_seed(sweep: SweepSettings, task: str) -> int:
    return (sweep.base_settings(task).seed * 1009 + sum(map(ord, task))) % 2**31


def _default_concurrency(sweep: SweepSettings) -> int:
    import ray

    res = ray.cluster_resources()
    per_trial_cpu = sweep.workers_per_trial * sweep.cpus_per_worker + 0.25
    limit = int(res.get("CPU", 1) // per_trial_cpu)
    if sweep.gpus_per_worker:
        limit = min(limit, int(res.get("GPU", 0) // (sweep.workers_per_trial * sweep.gpus_per_worker)))
    return max(1, limit)


def check_new_or_resume(sweep: SweepSettings) -> None:
    """A sweep name already used refuses to start again without --resume: nothing written is replaced."""
    exists = storage.exists(sweep.root)
    if exists and not sweep.resume:
        raise ConfigError(
            f"sweep {sweep.name!r} already exists under {sweep.storage}; pass --resume to continue it, "
            "or choose another --name"
        )
    if not exists and sweep.resume:
        raise ConfigError(f"--resume: no sweep {sweep.name!r} under {sweep.storage} to continue")


def run_sweep(sweep: SweepSettings, *, num_cpus: int | None = None):
    """Run (or resume) a sweep; returns the DataFrame of best points per task and budget."""
    from hadskip.pipeline import num_layers_of, resolve_model_source

    num_layers = num_layers_of(resolve_model_source(sweep.model))
    check_budgets(sweep.budgets, num_layers)
    for task in sweep.tasks:
        sweep.base_settings(task)  # a bad --set fails here, before Ray starts
    check_new_or_resume(sweep)
    storage.makedirs(sweep.root)
    storage.write_bytes_atomic(
        storage.join(sweep.root, "sweep.json"), sweep.model_dump_json(indent=2).encode()
    )
    connect(sweep, num_cpus)
    start = time.perf_counter()
    pairs = sweep.pairs()
    for task, method in [(t, m) for t in sweep.tasks for m in sweep.methods if (t, m) not in pairs]:
        log.warning("%s: skipping method %s, which needs a classification task", task, method)
    prepared = set()
    for task, method in pairs:
        if task not in prepared:  # stage I once per task: every method starts from it
            prepare_stage1(sweep, task, num_layers)
            prepared.add(task)
        results = _tuner(sweep, task, num_layers, method).fit()
        if results.num_terminated + results.num_errors < len(results):
            # Tune returns normally on Ctrl-C with trials still unfinished: stop here, prune nothing
            raise KeyboardInterrupt
        log.info("%s %s: %d trials, %d errored", task, method, len(results), results.num_errors)
        if sweep.keep_checkpoints == "best":
            prune_checkpoints(sweep, task, method)
    log.info("sweep %s finished in %.0f s", sweep.name, time.perf_counter() - start)
    return best_points(read_results(sweep.results), sweep.name, sweep.tolerance)


def format_best(table) -> str:
    head = (f"{'task':<6} {'method':<8} {'budget':>6} {'metric':>15} {'layers':>6} {'trial':<10} {'lr':>8} "
            f"{'bs':>3} {'beta':>6} {'points':>6} {'invalid':>7}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in table.itertuples():
        metric = f"{r.metric_name} {r.metric:.4f}" if r.found and r.metric == r.metric else "none valid"
        if r.method == "full":  # the stage I reference: no trial, no stage III hyperparameters
            hyper = f"{'-':<10} {'-':>8} {'-':>3} {'-':>6}"
        else:
            beta = f"{r.beta:>6.2f}" if r.beta is not None and r.beta == r.beta else f"{'-':>6}"
            hyper = f"{str(r.trial_id):<10} {r.lr:>8.1e} {int(r.batch_size or 0):>3} {beta}"
        lines.append(f"{r.task:<6} {r.method:<8} {r.budget:>6g} {metric:>15} {r.mean_layers:>6.2f} {hyper} "
                     f"{r.n_points:>6} {r.n_invalid:>7}")  # fmt: skip
    return "\n".join(lines)


def prune_checkpoints(sweep: SweepSettings, task: str, method: str = "hadskip") -> None:
    """Keep, per budget, only the checkpoint of the best valid point of this task's trials; drop every
    trial's stage II checkpoint. Disk then holds one model per task and budget. Errored trials keep theirs:
    a later --resume restarts them from there."""
    try:
        df = read_results(sweep.results)
    except HadSkipError:
        return
    df = df[(df.sweep_id == sweep.name) & (df.task == task) & (df.method == method)]
    keep = set(best_points(df, sweep.name, sweep.tolerance).checkpoint.dropna())
    errored = (df.status == "failed") & ~df.error.fillna("").str.startswith(DIVERGED)
    df = df[~df.trial_id.isin(df.trial_id[errored])]
    for ckpt in df.checkpoint.dropna():
        if ckpt not in keep:
            storage.delete(ckpt)
    for trial_id in df.trial_id.dropna().unique():
        for name in ("stage2", "exits"):  # the models budgets were calibrated or trained from
            storage.delete(storage.join(sweep.root, "runs", trial_id, "checkpoints", name))
