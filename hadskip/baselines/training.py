"""Each early-exit method of the registry bound to its loss, as a stage of the one training loop.

Every method starts from the same stage I fine-tune that HadSkip distils from (so differences come from the
method, not from a different fine-tuning budget) and trains with `hadskip.core.loop.fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from hadskip.baselines import berxit, entropy, leebert, pabee, static
from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings
from hadskip.core.loop import Stage
from hadskip.registry import EXIT_METHODS, Method

ExitLoss = Callable[..., dict[str, torch.Tensor]]

EXIT_LOSSES: dict[str, ExitLoss] = {
    "static": static.loss,
    "entropy": entropy.loss,
    "pabee": pabee.loss,
    "berxit": berxit.loss,
    "leebert": leebert.loss,
}
if set(EXIT_LOSSES) != set(EXIT_METHODS):  # the registry and the code must name the same methods
    raise RuntimeError(
        f"exit losses {sorted(EXIT_LOSSES)} do not match the registry's {sorted(EXIT_METHODS)}"
    )


def exit_stage(method: Method, settings: ExitSettings, budget: float | None = None, name: str = "") -> Stage:
    """The training stage of an early-exit method (static: of one budget)."""
    return Stage(
        name or f"{method.name} (exits)",
        settings,
        trains=method.trains,
        loss=partial(EXIT_LOSSES[method.name], settings, budget),
        added_lr=settings.head_lr,
        weight_lr=settings.weight_lr,
        kind="exit",
        budget=budget,
    )


def new_exit_model(
    path: str | Path, method: Method, settings: ExitSettings, device: torch.device
) -> ExitModel:
    """A fresh exit model on the stage I checkpoint at `path`: new internal classifiers, no threshold yet."""
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(path)
    model = ExitModel(hf, method.name, method.rule, settings.head_dropout)
    model.patience_delta = settings.patience_delta
    return model.to(device)
