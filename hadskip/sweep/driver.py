"""The sweep driver: Ray Tune + Optuna over each method's hyperparameters, each trial a Ray Train run.

Three layers, as in Ray's own examples: `hadskip.sweep.worker.worker_loop` runs on every Ray Train worker;
`run_trial` is the Tune function trainable that builds one trial's `TorchTrainer`; `run_sweep` connects to
Ray, fine-tunes stage I once per task, runs one `Tuner` with one named Optuna study per task and method,
records stopped and failed trials, and returns the best point per budget.

Everything a restarted trial or driver needs lives under `storage` and `results` (paths or shared-storage
URIs): Tune's experiment state, each trial's run folder (`state.json` + safetensors checkpoints), the stage I
cache, and the Parquet dataset. Nothing is held only in one process's memory.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import time
from contextlib import contextmanager

from hadskip import storage
from hadskip.config import check_budgets
from hadskip.data.tasks import get_task, hold_out, load_split
from hadskip.errors import ConfigError, HadSkipError
from hadskip.registry import FULL, METHODS, Dimension
from hadskip.results.io import point_exists, read_results, write_point
from hadskip.results.tables import best_points
from hadskip.run.backbone import num_layers_of, resolve_model_source
from hadskip.run.stage1 import cached_info, full_row, stage1_key
from hadskip.sweep.rows import full_point_name, point_name, tag, unfinished_rows
from hadskip.sweep.settings import (
    CONFIRM_KEY,
    SweepSettings,
    confirm_seed,
    searched_values,
    sweep_seed,
    sweeps_under,
    trial_config,
    trial_settings,
)
from hadskip.sweep.worker import DIVERGED, METRIC, TIME_ATTR, worker_loop
from hadskip.tables import Column, text_table

log = logging.getLogger(__name__)
# what each Tune trial holds itself (Ray rejects a zero-CPU trial); its Train workers hold the rest
TRIAL_CPUS = 0.25
TUNE_SIGINT_VAR = "TUNE_DISABLE_SIGINT_HANDLER"  # "1": Tune leaves SIGINT to the driver (`fit`)


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
    if (
        sweep.test_fault
    ):  # test hook: Tune's trial folder is named <trainable>_<trial id>_<trial index>_<params>
        kind, _, index = sweep.test_fault.partition("@")
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
        },
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
        config = trial_config(trial.config)
        try:
            rows = unfinished_rows(
                self.sweep, self.task, config, trial.trial_id, self.num_layers, status, error, self.method
            )
        except HadSkipError as err:
            log.warning("could not record trial %s as %s: %s", trial.trial_id, status, err)
            return
        for row in rows:
            write_point(self.sweep.results, row, point_name(trial.trial_id))


def progress_line(
    label: str, states: list[str], best: dict[float, float], elapsed_s: float, total: int
) -> str:
    """One line of the sweep's progress view: trials finished (failed among them) and running of a task x
    method, its best valid metric per budget so far, and the time since it started."""
    finished = sum(s in ("TERMINATED", "ERROR") for s in states)
    failed = sum(s == "ERROR" for s in states)
    running = sum(s == "RUNNING" for s in states)
    shown = ", ".join(f"{b:g}: {m:.4f}" for b, m in sorted(best.items(), reverse=True)) or "none yet"
    return (
        f"{label}: {finished}/{total} trials finished ({failed} failed), {running} running; "
        f"best valid so far {shown}; {elapsed_s:.0f} s"
    )


class Progress:
    """Driver-side Tune callback: a progress line whenever what it shows changes (a trial reports a point,
    ends or fails); Tune's own status table only with --verbose. Display only: nothing here is needed to
    resume."""

    def __init__(self, label: str, total: int, tolerance: float):
        from ray.tune import Callback

        self.label, self.total, self.tolerance = label, total, tolerance
        self.best: dict[float, float] = {}
        self.diverged: set[str] = set()  # trials that end normally for Tune but recorded as failed
        self.start = time.perf_counter()
        self.last = ""

        class _Callback(Callback):
            def on_trial_result(cb, iteration, trials, trial, result, **info):  # noqa: N805
                budget, metric, layers = result.get("budget"), result.get("metric"), result.get("mean_layers")
                if result.get("diverged"):
                    self.diverged.add(trial.trial_id)
                known = budget is not None and metric is not None and layers is not None
                if known and layers <= budget + self.tolerance and metric > self.best.get(budget, -math.inf):
                    self.best[budget] = metric
                self.show(trials)

            def on_trial_complete(cb, iteration, trials, trial, **info):  # noqa: N805
                self.show(trials, trial, "TERMINATED")  # Tune sets the status after its callbacks

            def on_trial_error(cb, iteration, trials, trial, **info):  # noqa: N805
                self.show(trials, trial, "ERROR")

        self.callback = _Callback()

    def show(self, trials, ended=None, status: str = "") -> None:
        states = [
            "ERROR" if t.trial_id in self.diverged else status if t is ended else t.status for t in trials
        ]
        states += ["PENDING"] * max(0, self.total - len(states))
        line = progress_line(self.label, states, self.best, time.perf_counter() - self.start, self.total)
        if line.rsplit(";", 1)[0] != self.last:
            self.last = line.rsplit(";", 1)[0]
            print(line, flush=True)


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


LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's single-machine mode when "0"


def _loopback_only() -> None:
    """Keep every port of the embedded local Ray on 127.0.0.1.

    Ray 2.60 rewrites `_node_ip_address="127.0.0.1"` to the machine's routable address
    (`services.resolve_ip_for_localhost`), and its GCS, raylet and object manager then listen on every
    interface. Only its single-machine mode (the macOS/Windows default, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`)
    resolves the node to loopback. Ray reads that flag when it is imported, so the module constant is set
    too for a Ray imported earlier (private API: this function is the only place that touches it). An
    explicit value of the variable is left alone.
    """
    if os.environ.setdefault(LOOPBACK_VAR, "0") != "0":
        return
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def connect(sweep: SweepSettings, num_cpus: int | None = None) -> None:
    """Join the cluster at --address, or start a private local Ray (the embedded default).

    The local Ray binds to 127.0.0.1 only (`_loopback_only`), keeps its dashboard there (Ray Train frees
    the workers of ASHA-stopped trials through the state API, which needs it) and points the state API at
    it explicitly, so a stale Ray left by another process on this machine is never picked up.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")  # a stuck start fails, never hangs
    env = {
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"],
        "TRANSFORMERS_VERBOSITY": "info" if sweep.verbose else "error",  # no load report per worker
    }
    if sweep.address:
        ray.init(address=sweep.address, runtime_env={"env_vars": env}, log_to_driver=sweep.verbose)
        return
    _loopback_only()
    port = _free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        log_to_driver=sweep.verbose,  # workers' logs stay in each trial's train.log
        runtime_env={"env_vars": env},
        _node_ip_address="127.0.0.1",
    )


def check_one_trial_fits(sweep: SweepSettings) -> None:
    """A local Ray too small for one trial would start every trial's workers and wait 120 s for them in
    vain; say so before stage I starts. A cluster (--address) may grow under its autoscaler: not checked."""
    import ray

    if sweep.address:
        return
    have = ray.cluster_resources()
    cpus = sweep.workers_per_trial * sweep.cpus_per_worker + TRIAL_CPUS
    if cpus > have.get("CPU", 0) + 1e-9:
        raise ConfigError(
            f"one trial needs {cpus:g} CPUs ({sweep.workers_per_trial} worker(s) x --cpus-per-worker "
            f"{sweep.cpus_per_worker:g} + {TRIAL_CPUS:g} for the trial itself) but the local Ray has "
            f"{have.get('CPU', 0):g}; raise --num-cpus or lower --cpus-per-worker to at most "
            f"{max(have.get('CPU', 0) - TRIAL_CPUS, 0) / sweep.workers_per_trial:g}"
        )
    gpus = sweep.workers_per_trial * sweep.gpus_per_worker
    if gpus > have.get("GPU", 0) + 1e-9:
        raise ConfigError(
            f"one trial needs {gpus:g} GPUs ({sweep.workers_per_trial} worker(s) x --gpus-per-worker "
            f"{sweep.gpus_per_worker:g}) but the local Ray sees {have.get('GPU', 0):g}"
        )


def prepare_stage1(sweep: SweepSettings, task: str, num_layers: int) -> None:
    """Fine-tune stage I of a task once, on the same kind of workers as the trials, before they start, and
    write the sweep's full-model row. A cached stage I only needs its row: the driver writes it directly."""
    from ray.train.torch import TorchTrainer

    settings = sweep.base_settings(task)
    source = resolve_model_source(settings.model.name_or_path)
    info = cached_info(sweep.cache, settings, source)
    if info is not None:
        name = full_point_name(sweep, stage1_key(settings, source))
        row = tag(full_row(settings, info, num_layers, run_id=name), sweep, name, task)
        if not point_exists(sweep.results, row, name):
            write_point(sweep.results, row, name)
        return
    log.info("%s: stage I (fine-tuning the full model; shared by every trial)", task)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "sweep": sweep.model_dump_json(),
            "settings": settings.model_dump_json(),
            "stage1_only": True,
            "num_layers": num_layers,
        },
        scaling_config=_scaling(sweep),
        run_config=_train_run_config(sweep, f"stage1-{task}", []),
    )
    with sigint_restored():
        trainer.fit()


@contextmanager
def sigint_restored():
    """The driver's SIGINT handler as it was before the block. Ray Train's trainer installs its own in the
    driver and leaves it there, so afterwards Ctrl-C outside a Tune study (curve tracing, confirmations'
    bookkeeping) took three presses to end the sweep."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread owns handlers
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def fit(tuner):
    """`tuner.fit()`, where Ctrl-C ends the sweep (resumable), not only the study that was running.

    Tune's own SIGINT handler stops a run gracefully (its state saved) and returns as if it had finished,
    an interrupted trial counting as errored, so the driver went on to the next study. SIGINT is taken here
    instead: noted, then handed to Tune as SIGUSR1, its other stop signal; a second Ctrl-C stops at once.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return tuner.fit()
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        log.warning("interrupted: stopping once Tune has saved its state (Ctrl-C again to stop at once)")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous_env = os.environ.get(TUNE_SIGINT_VAR)
    os.environ[TUNE_SIGINT_VAR] = "1"  # Tune leaves SIGINT to us
    try:
        with sigint_restored():
            signal.signal(signal.SIGINT, on_sigint)
            results = tuner.fit()
    finally:
        if previous_env is None:
            os.environ.pop(TUNE_SIGINT_VAR, None)
        else:
            os.environ[TUNE_SIGINT_VAR] = previous_env
    if interrupted.is_set() or results.num_terminated + results.num_errors < len(results):
        raise KeyboardInterrupt
    return results


def _tune_space(space: dict[str, Dimension]) -> dict:
    from ray import tune

    make = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice}
    return {key: make[kind](*args) for key, (kind, args) in space.items()}


def _trainable(sweep: SweepSettings, task: str, num_layers: int, method: str):
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(
            run_trial, sweep_json=sweep.model_dump_json(), task=task, num_layers=num_layers, method=method
        ),
        {"CPU": TRIAL_CPUS},  # the trial only waits on its Train workers, which hold the real resources
    )


def experiment_name(task: str, method: str) -> str:
    return f"tune-{task}" if method == "hadskip" else f"tune-{task}-{method}"


def _tuner(sweep: SweepSettings, task: str, num_layers: int, method: str = "hadskip"):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    trainable = _trainable(sweep, task, num_layers, method)
    path = storage.join(sweep.root, experiment_name(task, method))
    if tune.Tuner.can_restore(path):
        log.info("%s %s: resuming the Tune experiment at %s", task, method, path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    n = len(sweep.budgets)
    scheduler = (
        ASHAScheduler(time_attr=TIME_ATTR, max_t=n, grace_period=1, reduction_factor=2)
        if sweep.scheduler == "asha" and n > 1
        else FIFOScheduler()
    )
    space = sweep.space(method)
    # every searched setting fixed with --set: nothing for Optuna to search, the trials are plain repeats;
    # otherwise the first trial runs the defaults and Optuna searches from there
    first = sweep.defaults_point(task, method)
    searcher = (
        OptunaSearch(
            study_name=sweep.study(task, method),
            seed=sweep_seed(sweep, task),
            points_to_evaluate=[first] if first else None,
        )
        if space
        else None
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
            callbacks=[
                PointBookkeeper(sweep, task, num_layers, method).callback,
                Progress(f"{task} {method}", sweep.trials_per_task, sweep.tolerance).callback,
            ],
            verbose=1 if sweep.verbose else 0,
        ),
    )


def confirmation_points(sweep: SweepSettings, task: str, method: str) -> list[dict]:
    """What the confirmation of a task x method re-trains: per budget its best valid search trial's
    configuration (a trial best at several budgets once: one run serves every budget), each with
    `confirm_seeds` fresh seeds. Read from the results, so a resumed driver computes the same list."""
    try:
        df = read_results(sweep.results)
    except HadSkipError:
        return []
    df = df[(df.sweep_id == sweep.name) & (df.task == task) & (df.method == method) & (df.role == "search")]
    if df.empty:  # every search trial failed: nothing to confirm
        return []
    best = best_points(df, None, sweep.tolerance)
    keys = list(sweep.space(method))
    points = []
    for trial_id in dict.fromkeys(best[best.found].trial_id):
        searched = df[df.trial_id == trial_id].settings.dropna()
        values = searched_values(searched.iloc[0], keys) if len(searched) else {}
        for i in range(sweep.confirm_seeds):
            points.append({**values, "confirms": trial_id, "method_seed": confirm_seed(sweep, task, i)})
    return points


def _confirm_tuner(sweep: SweepSettings, task: str, num_layers: int, method: str, points: list[dict]):
    """A plain grid (no search, no early stopping) over the confirmation points of one task x method."""
    from ray import tune

    trainable = _trainable(sweep, task, num_layers, method)
    name = f"confirm-{task}-{method}"
    path = storage.join(sweep.root, name)
    if tune.Tuner.can_restore(path):
        log.info("%s %s: resuming the confirmation runs at %s", task, method, path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={CONFIRM_KEY: tune.grid_search(points)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=1,
            max_concurrent_trials=sweep.max_concurrent or _default_concurrency(sweep),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=sweep.root,
            callbacks=[
                PointBookkeeper(sweep, task, num_layers, method).callback,
                Progress(f"{task} {method} confirmation", len(points), sweep.tolerance).callback,
            ],
            verbose=1 if sweep.verbose else 0,
        ),
    )


def confirm(sweep: SweepSettings, task: str, num_layers: int, method: str) -> None:
    """Re-train the best configurations of a finished search with fresh seeds (`--confirm-seeds`)."""
    points = confirmation_points(sweep, task, method)
    if not points:
        return
    log.info(
        "%s %s: confirming %d configuration(s) with %d seed(s) each",
        task,
        method,
        len(points) // sweep.confirm_seeds,
        sweep.confirm_seeds,
    )
    fit(_confirm_tuner(sweep, task, num_layers, method, points))


def trace_curves(sweep: SweepSettings, task: str, method: str) -> None:
    """The accuracy-latency curve of every best checkpoint of a task x method (`--curves`), each on a Ray
    worker with a trial worker's resources; rows go to the sweep's results, once per checkpoint."""
    import ray

    from hadskip.run.curve import trace_curve

    if METHODS[method].rule == "static":
        return  # one model per budget, nothing to sweep
    df = read_results(sweep.results)
    df = df[df.sweep_id == sweep.name]
    done = set(df[df.role == "curve"].run_id)
    best = best_points(df[(df.task == task) & (df.method == method)], None, sweep.tolerance)
    settings = df.dropna(subset=["trial_id"]).drop_duplicates("trial_id").set_index("trial_id").settings
    todo = [
        (r.trial_id, r.budget, r.checkpoint, settings[r.trial_id])
        for r in best[best.found].itertuples()
        if isinstance(r.checkpoint, str) and _curve_id(r.trial_id, r.budget) not in done
    ]

    def one(trial_id: str, budget: float, checkpoint: str, settings_json: str) -> int:
        from hadskip.config import RunSettings

        tags = {
            "sweep_id": sweep.name,
            "trial_id": trial_id,
            "study": sweep.study(task, method),
            "checkpoint": checkpoint,
        }
        rows = trace_curve(
            storage.local_dir_for(checkpoint),
            task,
            data_dir=sweep.data_dir,
            out=sweep.results,
            settings=RunSettings.model_validate_json(settings_json),
            run_id=_curve_id(trial_id, budget),
            tags=tags,
        )
        return len(rows)

    remote = ray.remote(num_cpus=sweep.cpus_per_worker, num_gpus=sweep.gpus_per_worker)(one)
    for (trial_id, budget, _, _), n in zip(todo, ray.get([remote.remote(*t) for t in todo]), strict=True):
        log.info("%s %s: curve of %s at budget %g, %d points", task, method, trial_id, budget, n)


def _curve_id(trial_id: str, budget: float) -> str:
    return f"curve-{trial_id}-{budget:g}"


def _default_concurrency(sweep: SweepSettings) -> int:
    import ray

    res = ray.cluster_resources()
    per_trial_cpu = sweep.workers_per_trial * sweep.cpus_per_worker + TRIAL_CPUS
    limit = int(res.get("CPU", 1) // per_trial_cpu)
    if sweep.gpus_per_worker:
        limit = min(limit, int(res.get("GPU", 0) // (sweep.workers_per_trial * sweep.gpus_per_worker)))
    return max(1, limit)


def check_new_or_resume(sweep: SweepSettings) -> None:
    """A sweep name already used refuses to start again without --resume: nothing written is replaced."""
    for flag, uri in (("--storage", sweep.storage), ("--results", sweep.results)):
        problem = storage.unwritable_dir(uri)
        if problem:
            raise ConfigError(f"{flag} {uri!r} cannot be used: {problem}")
    exists = storage.exists(sweep.root)
    if exists and not sweep.resume:
        raise ConfigError(
            f"sweep {sweep.name!r} already exists under {sweep.storage}; pass --resume to continue it, "
            "or choose another --name"
        )
    if not exists and sweep.resume:
        there = sweeps_under(sweep.storage)
        raise ConfigError(
            f"--resume: no sweep {sweep.name!r} under {sweep.storage} to continue; "
            + (f"sweeps there: {', '.join(there)}" if there else "no sweep there at all")
        )


def run_sweep(sweep: SweepSettings, *, num_cpus: int | None = None):
    """Run (or resume) a sweep; returns the DataFrame of best points per task and budget."""
    num_layers = num_layers_of(resolve_model_source(sweep.model))
    check_budgets(sweep.budgets, num_layers)
    for task in sweep.tasks:
        settings = sweep.base_settings(task)  # a bad --set fails here, before Ray starts
        if settings.data.holdout_rows:  # and a holdout that leaves no training rows
            train = load_split(get_task(task), "train", settings.data.data_dir)
            hold_out(train, settings.data.holdout_rows, settings.seed)
    check_new_or_resume(sweep)
    storage.makedirs(sweep.root)
    storage.write_bytes_atomic(
        storage.join(sweep.root, "sweep.json"), sweep.model_dump_json(indent=2).encode()
    )
    connect(sweep, num_cpus)
    check_one_trial_fits(sweep)
    start = time.perf_counter()
    pairs = sweep.pairs()
    for task, method in [(t, m) for t in sweep.tasks for m in sweep.methods if (t, m) not in pairs]:
        log.warning("%s: skipping method %s, which needs a classification task", task, method)
    prepared = set()
    for task, method in pairs:
        if task not in prepared:  # stage I once per task: every method starts from it
            prepare_stage1(sweep, task, num_layers)
            prepared.add(task)
        results = fit(_tuner(sweep, task, num_layers, method))
        log.info("%s %s: %d trials, %d errored", task, method, len(results), results.num_errors)
        if sweep.confirm_seeds:
            confirm(sweep, task, num_layers, method)
        if sweep.keep_checkpoints == "best":
            prune_checkpoints(sweep, task, method)
        if sweep.curves:
            trace_curves(sweep, task, method)
    log.info("sweep %s finished in %.0f s", sweep.name, time.perf_counter() - start)
    return best_points(read_results(sweep.results), sweep.name, sweep.tolerance)


def _shown(value, fmt: str) -> str:
    return "-" if value is None or value != value else format(value, fmt)


def format_best(table) -> str:
    """The best-point table the sweep prints at its end (the full model has no trial or stage III settings)."""
    records = []
    for r in table.itertuples():
        trial = r.method != FULL
        records.append(
            {
                "task": r.task,
                "method": r.method,
                "budget": f"{r.budget:g}",
                "metric": f"{r.metric_name} {r.metric:.4f}"
                if r.found and r.metric == r.metric
                else "none valid",
                "layers": _shown(r.mean_layers, ".2f"),
                "trial": str(r.trial_id) if trial else "-",
                "lr": _shown(r.lr, ".1e") if trial else "-",
                "bs": _shown(r.batch_size, ".0f") if trial else "-",
                "beta": _shown(r.beta, ".2f") if trial else "-",
                "points": r.n_points,
                "invalid": r.n_invalid,
            }
        )
    left = {"task", "method", "trial"}
    keys = ["task", "method", "budget", "metric", "layers", "trial", "lr", "bs", "beta", "points", "invalid"]
    return text_table(records, [Column(k, align="<" if k in left else ">") for k in keys])


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
