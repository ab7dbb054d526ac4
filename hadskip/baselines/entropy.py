"""Entropy exit (DeeBERT, BranchyNet): the stage I model is DeeBERT's stage one; stage two trains only the
internal classifiers, on the sum of their losses; a sequence exits when its prediction's entropy is low."""

from __future__ import annotations

import torch

from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings


def loss(
    settings: ExitSettings, budget: float | None, model: ExitModel, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    out, per_exit = model.exit_losses(batch)
    return {"total": per_exit[:-1].sum(), "last": per_exit[-1].detach()}
