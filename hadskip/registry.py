"""The methods this platform trains, in one table: names, what each needs, and what a sweep searches.

Plain data (no torch, no Ray), so the settings, the results schema, the sweep's search spaces, the CLI and
the report all read the same names from here. The training code of each method lives with the method
(`hadskip.run.hadskip_walk` for HadSkip, `hadskip.baselines.<name>` for each early-exit baseline), which
checks on import that it covers exactly the methods listed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# An Optuna/Tune search dimension: (kind, arguments), kind one of "loguniform", "uniform", "choice".
Dimension = tuple[str, tuple]


@dataclass(frozen=True)
class Method:
    name: str
    family: Literal["skip", "exit"]
    # exit rule at inference (hadskip.baselines.rules); "gate" for HadSkip's learned skip gates
    rule: str
    # what a method trains beside the stage I model: "all" (backbone and added modules) or "added" only
    trains: Literal["all", "added"]
    regression: bool  # can serve regression tasks (STS-B): needs no class probabilities
    per_budget: bool = False  # one model per budget (static) instead of one model serving every budget
    # the hyperparameters a sweep searches for this method, by settings key
    space: dict[str, Dimension] = field(default_factory=dict)


_LR = ("loguniform", (5e-6, 5e-5))  # the paper's fine-tuning range
# HadSkip's stage III default (5e-5: higher on the mean than 2e-5 on the CPU, ties seed by seed) sits at that
# range's edge, so stage III's rate is searched up to 1e-4
_STAGE3_LR = ("loguniform", (5e-6, 1e-4))
_BATCH = ("choice", ([8, 16, 32, 64],))
_HEAD_LR = ("loguniform", (1e-4, 3e-3))
_FEATURE_KD = ("choice", ([0.0, 0.1, 1.0, 10.0],))

# Ranges follow the papers (HadSkip: lr 5e-6..5e-5, stage III's to 1e-4, batch 8..64, loss weights around
# 1.0; beta reaches up to 100 because the paper's 1.0 does not bind here, see README "choices that differ
# from the paper"; LeeBERT: weight lr 1e-5..5e-3, cycle 2/4/8).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "hadskip",
            "skip",
            "gate",
            "all",
            regression=True,
            space={
                "stage3.lr": _STAGE3_LR,
                "stage3.batch_size": _BATCH,
                "stage3.beta": ("loguniform", (1.0, 100.0)),
                "stage3.alpha_pred": ("loguniform", (0.1, 10.0)),
                # off (the default) or on at a log-spaced weight
                "stage3.alpha_hidden": _FEATURE_KD,
                "stage3.alpha_attn": _FEATURE_KD,
                "stage3.alpha_emb": _FEATURE_KD,
            },
        ),
        Method(
            "static",
            "exit",
            "static",
            "all",
            regression=True,
            per_budget=True,
            space={"exits.lr": _LR, "exits.batch_size": _BATCH},
        ),
        Method(  # DeeBERT's stage two: the backbone stays frozen, so no backbone learning rate
            "entropy",
            "exit",
            "entropy",
            "added",
            regression=False,
            space={"exits.batch_size": _BATCH, "exits.head_lr": _HEAD_LR},
        ),
        Method(
            "pabee",
            "exit",
            "patience",
            "all",
            regression=True,
            space={"exits.lr": _LR, "exits.batch_size": _BATCH, "exits.head_lr": _HEAD_LR},
        ),
        Method(
            "berxit",
            "exit",
            "lte",
            "all",
            regression=True,
            space={"exits.lr": _LR, "exits.batch_size": _BATCH, "exits.head_lr": _HEAD_LR},
        ),
        Method(
            "leebert",
            "exit",
            "patience",
            "all",
            regression=False,
            space={
                "exits.lr": _LR,
                "exits.batch_size": _BATCH,
                "exits.head_lr": _HEAD_LR,
                "exits.weight_lr": ("loguniform", (1e-5, 5e-3)),
                "exits.cycle": ("choice", ([2, 4, 8],)),
            },
        ),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
EXIT_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.family == "exit")
FULL = "full"  # the results' name for the stage I model (every layer): the reference row of each task
RESULT_METHODS: tuple[str, ...] = (FULL, *METHOD_NAMES)

MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
ResultMethod = Literal[RESULT_METHODS]  # type: ignore[valid-type]


def get_method(name: str) -> Method:
    from hadskip.errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"method {name!r} is unknown; known: {', '.join(METHODS)}")
    return METHODS[name]


def serves(method: str, regression_task: bool) -> bool:
    """Whether a method can serve a task (methods that need class probabilities skip regression)."""
    return not regression_task or METHODS[method].regression


def categorical_keys() -> set[str]:
    return {k for m in METHODS.values() for k, (kind, _) in m.space.items() if kind == "choice"}


def check_serves(method: str, task_name: str, regression_task: bool) -> None:
    """A method that needs class probabilities cannot serve a regression task: say so before any work."""
    from hadskip.errors import ConfigError

    if not serves(get_method(method).name, regression_task):
        usable = ", ".join(n for n, m in METHODS.items() if m.regression)
        raise ConfigError(
            f"method {method!r} needs a classification task, and {task_name} is regression; use one of {usable}"
        )
