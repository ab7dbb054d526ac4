"""BERxiT: Alternating fine-tuning (odd steps: the last exit's loss; even steps: the sum over all exits) with the
learning-to-exit (LTE) module trained beside it (L_i + J_i); a sequence exits when the LTE certainty is high.
Serves regression."""

from __future__ import annotations

import torch

from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings
from hadskip.core import losses


def lte_targets(exit_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(M, B) BERxiT's "ground-truth" certainty: 1 where the exit's prediction is right (classification),
    1 - tanh(|prediction - label|) for regression. Computed from detached predictions."""
    out = []
    for lg in exit_logits:
        lg = lg.detach().float()
        if lg.shape[-1] == 1:
            out.append(1.0 - torch.tanh((lg[:, 0] - labels.float()).abs()))
        else:
            out.append((lg.argmax(-1) == labels).float())
    return torch.stack(out)


def lte_losses(certainty: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M,) J_i: MSE between the LTE certainty u_i (M, B) and its target."""
    return (certainty.float() - targets).pow(2).mean(1)


def loss(
    settings: ExitSettings, budget: float | None, model: ExitModel, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    labels = batch["labels"]
    out = model.exit_outputs(**{k: v for k, v in batch.items() if k != "labels"})
    # Alternating: odd iterations (step 1, 3, ...) the last exit alone, even ones every exit; the LTE loss J_i
    # rides along with each L_i. Odd steps compute nothing for the other exits, so their heads get no
    # gradient (not a zero one).
    used = [len(out.logits) - 1] if step % 2 == 0 else list(range(len(out.logits)))
    logits = [out.logits[i] for i in used]
    per_exit = losses.exit_task_losses(logits, labels)
    certainty = torch.stack(
        [torch.sigmoid(model.lte(out.cls[i].to(model.lte.weight.dtype))).squeeze(-1) for i in used]
    )
    j = lte_losses(certainty, lte_targets(logits, labels))
    return {"total": (per_exit + j).sum(), "last": per_exit[-1].detach(), "lte": j.mean().detach()}
