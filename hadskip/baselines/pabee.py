"""PABEE: every exit trained jointly with the weighted average sum_i i L_i / sum_i i; a sequence exits when the
predictions of `patience` consecutive exits agree (regression: change below `exits.patience_delta`)."""

from __future__ import annotations

import torch

from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings


def pabee_loss(per_exit: torch.Tensor) -> torch.Tensor:
    """PABEE's weighted average: sum_i i * L_i / sum_i i, deeper exits weigh more."""
    w = torch.arange(1, per_exit.shape[0] + 1, dtype=per_exit.dtype, device=per_exit.device)
    return (w * per_exit).sum() / w.sum()


def loss(
    settings: ExitSettings, budget: float | None, model: ExitModel, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    out, per_exit = model.exit_losses(batch)
    return {"total": pabee_loss(per_exit), "last": per_exit[-1].detach()}
