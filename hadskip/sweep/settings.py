"""What defines a sweep, validated once in the driver and shipped to every trial: plain pydantic, no Ray.

The search space of each method comes from the registry (`hadskip.registry`); a key fixed with --set leaves
the search.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hadskip import storage
from hadskip.config import RunSettings, build_settings
from hadskip.data.tasks import TASKS, available_tasks, get_task
from hadskip.errors import ConfigError
from hadskip.registry import METHODS, Dimension, serves

log = logging.getLogger(__name__)

OVER_BUDGET_SCORE = -1.0  # an over-budget point counts as this, below any metric a feasible point can have

# --smoke-test: a real sweep (real weights, real GLUE rows) shrunk to minutes on a laptop CPU.
SMOKE_TASKS = "sst2,mrpc"  # SST-2 is learnt from a few hundred rows; MRPC shows a pair task
SMOKE_OVERRIDES = [
    "data.train_limit=512",
    "data.dev_limit=256",
    "data.max_length=64",
    "stage1.epochs=2",
    "stage1.batch_size=16",
    "stage2.max_steps=8",
    "stage3.max_steps=8",
    "stage3.calibration_rows=256",
]


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
    cpus_per_worker: float = Field(1.0, gt=0, allow_inf_nan=False)
    gpus_per_worker: float = Field(0.0, ge=0, allow_inf_nan=False)
    max_concurrent: int | None = Field(None, ge=1)
    storage: str = "sweep-state"  # Tune state, trial runs, stage I cache (a path or a URI)
    results: str = "results"  # the Parquet dataset (a path or a URI)
    address: str | None = None  # None: start a local Ray; "auto" or ray://...: join a cluster
    resume: bool = False
    tolerance: float = Field(
        0.25, ge=0, allow_inf_nan=False
    )  # a point is valid when mean layers <= budget + tolerance
    scheduler: Literal["asha", "fifo"] = "asha"
    max_failures: int = Field(1, ge=0)  # Ray Train restarts of a trial whose worker died
    overrides: list[str] = []  # --set for every run (stage I and the fixed parts of stage III)
    keep_checkpoints: Literal["best", "all"] = "best"
    speed_batch_size: int | None = Field(32, ge=1)  # every point's measured speed-up at this batch; None: off
    # after each task x method search: its best valid configuration per budget re-trained with this many
    # fresh seeds (rows with role "confirm"); 0: off
    confirm_seeds: int = Field(2, ge=0)
    verbose: bool = False  # Tune's status table and every worker's log lines on the console
    curves: bool = False  # trace the accuracy-latency curve of every best checkpoint (`hadskip curve`)
    # TEST HOOK, not a feature: "nan@<trial index>" makes that trial's loss NaN (tests of failure recording)
    test_fault: str | None = None

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"method {m!r} is unknown; known: {', '.join(METHODS)}")
        if not methods:
            raise ValueError(f"no method given; known: {', '.join(METHODS)}")
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
        flags = [
            f"data.task={json.dumps(task)}",
            f"model.name_or_path={json.dumps(self.model)}",
            f"budgets={json.dumps(self.budgets)}",
        ]
        if self.data_dir:
            flags.append(f"data.data_dir={json.dumps(self.data_dir)}")
        if self.speed_batch_size:
            flags.append(f"speed_batch_size={self.speed_batch_size}")
        if self.workers_per_trial == 1 and self.gpus_per_worker == 0:
            flags.append(f"threads={max(1, int(self.cpus_per_worker))}")
        return build_settings({}, flags + self.overrides)

    def space(self, method: str = "hadskip") -> dict[str, Dimension]:
        """The searched hyperparameters of a method: its space less those the user fixed with --set."""
        fixed = {o.split("=", 1)[0].strip() for o in self.overrides}
        return {k: v for k, v in METHODS[method].space.items() if k not in fixed}

    def defaults_point(self, task: str, method: str = "hadskip") -> dict[str, Any]:
        """The searched settings at their defaults (with this sweep's --set applied): a search's first trial,
        so even a sweep of one or two trials per task measures the documented configuration. A default
        outside its searched range is left for the searcher to draw."""
        space = self.space(method)
        defaults = searched_values(self.base_settings(task).model_dump_json(), list(space))
        point = {}
        for key, (kind, args) in space.items():
            value = defaults[key]
            if value is not None and (
                (value in args[0]) if kind == "choice" else args[0] <= value <= args[1]
            ):
                point[key] = value
        return point

    def pairs(self) -> list[tuple[str, str]]:
        """(task, method) pairs the sweep runs: a method that cannot serve a regression task skips it."""
        return [(t, m) for t in self.tasks for m in self.methods if serves(m, get_task(t).is_regression)]


def sweeps_under(storage_uri: str) -> list[str]:
    """Names of the sweeps under a --storage location, the last started (newest sweep.json) first."""
    fs, path = storage.resolve(storage_uri)
    if fs.get_file_info(path).type != storage.pafs.FileType.Directory:
        return []
    folders = [
        f
        for f in fs.get_file_info(storage.pafs.FileSelector(path))
        if f.type == storage.pafs.FileType.Directory
    ]
    found = []
    for folder in folders:
        info = fs.get_file_info(f"{folder.path}/sweep.json")
        if info.type == storage.pafs.FileType.File:
            found.append((info.mtime_ns or 0, folder.base_name))
    return [name for _, name in sorted(found, reverse=True)]


def last_sweep(storage_uri: str) -> str:
    """The sweep --resume continues when no --name is given: the last one started under --storage."""
    names = sweeps_under(storage_uri)
    if not names:
        raise ConfigError(
            f"--resume: no sweep under {storage_uri} to continue (no <name>/sweep.json there); "
            "start one without --resume, or pass the --storage it used"
        )
    if len(names) > 1:
        log.info(
            "--resume: continuing %s, the last sweep started under %s (also there: %s)",
            names[0],
            storage_uri,
            ", ".join(names[1:]),
        )
    return names[0]


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


CONFIRM_KEY = "confirm"  # a confirmation trial's whole config sits under this key (one grid value)


def trial_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's own config: Optuna's suggestions, or a confirmation's fixed point (its searched values,
    `confirms` and `method_seed`)."""
    return config.get(CONFIRM_KEY, config)


def trial_settings(
    sweep: SweepSettings, task: str, config: dict[str, Any], method: str = "hadskip"
) -> RunSettings:
    """The run settings of one trial: the sweep's base, the method, and Optuna's suggestions (or a
    confirmation's searched values and its seed)."""
    config = trial_config(config)
    base = json.loads(sweep.base_settings(task).model_dump_json())
    flags = [f"method={json.dumps(method)}"]
    suggested = [f"{k}={json.dumps(v)}" for k, v in config.items() if k in METHODS[method].space]
    if config.get("method_seed") is not None:
        suggested.append(f"method_seed={int(config['method_seed'])}")
    return build_settings(base, flags + suggested)


def searched_values(settings_json: str, keys: list[str]) -> dict[str, Any]:
    """The values a trial's settings JSON holds for the searched (dotted) keys."""
    node_root = json.loads(settings_json)
    out = {}
    for key in keys:
        node = node_root
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def confirm_seed(sweep: SweepSettings, task: str, index: int) -> int:
    """The i-th confirmation seed of a task: never the searched seed, the same on every resume."""
    return sweep.base_settings(task).seed + 1000 * (index + 1)


def objective(points: list[tuple[float, float | None, float | None]], tolerance: float) -> float:
    """Mean over the budgets done so far of the dev metric, an over-budget (or failed) point counting as
    OVER_BUDGET_SCORE: one trial serves every budget, so Optuna and ASHA rank it on all of them."""
    if not points:
        return OVER_BUDGET_SCORE
    scores = [
        metric
        if metric is not None and layers is not None and layers <= budget + tolerance
        else OVER_BUDGET_SCORE
        for budget, metric, layers in points
    ]
    return sum(scores) / len(scores)


def sweep_seed(sweep: SweepSettings, task: str) -> int:
    """The Optuna sampler's seed of a task's studies."""
    return (sweep.base_settings(task).seed * 1009 + sum(map(ord, task))) % 2**31
