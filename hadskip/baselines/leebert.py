"""LeeBERT: mutual distillation among all exits (LAE) with learned loss weights, optimised by cross-level
optimisation (CLO-v2: every `exits.cycle`-th step the batch splits in halves D1, D2; the model learns from
D1, the weights from D1 and D2); a sequence exits by patience, as in its paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings
from hadskip.core import losses


def mutual_kd_rows(exit_logits: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """(M, M, B): [m, t] is the temperature-scaled distillation of exit m (student) from exit t (teacher,
    detached), LeeBERT Eq. 2; the diagonal is zero."""
    t = temperature
    logp = torch.stack([F.log_softmax(lg.float() / t, -1) for lg in exit_logits])  # (M, B, C)
    teacher = logp.detach()
    # KL(p_t || p_m) per row = sum_c p_t (log p_t - log p_m)
    kd = (teacher.exp()[None] * (teacher[None] - logp[:, None])).sum(-1) * (
        t * t
    )  # (M_student, M_teacher, B)
    eye = torch.eye(len(exit_logits), dtype=torch.bool, device=kd.device)[:, :, None]
    return kd.masked_fill(eye, 0.0)


def leebert_weights(loss_logits: torch.Tensor) -> torch.Tensor:
    """(M, M) loss weights from their free parameters: per exit a softmax over its M terms (its task loss
    on the diagonal, its distillation from each other exit off it), times M so uniform weights are 1.
    Normalising per exit keeps the learned weights from collapsing to zero (the loss falls as any weight
    does)."""
    m = loss_logits.shape[0]
    return loss_logits.softmax(-1) * m


def leebert_rows(ce: torch.Tensor, kd: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B,) LeeBERT's Eq. 5 per row: sum_m w_m CE_m + sum_m sum_{t != m} w_{m,t} KD_{m,t} / (M (M - 1));
    ce (M, B), kd (M, M, B) with a zero diagonal, weights (M, M) with the task-loss weights on the diagonal."""
    m = ce.shape[0]
    task = (weights.diagonal()[:, None] * ce).sum(0)
    distil = (weights[:, :, None] * kd).sum((0, 1)) / max(m * (m - 1), 1)
    return task + distil


def loss(
    settings: ExitSettings, budget: float | None, model: ExitModel, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    labels = batch["labels"]
    out, per_exit = model.exit_losses(batch)
    ce = torch.stack([losses.per_row_task_loss(lg, labels) for lg in out.logits])  # (M, B)
    kd = mutual_kd_rows(out.logits, settings.kd_temperature)  # (M, M, B)
    weights = leebert_weights(model.loss_logits)
    batch_size = labels.shape[0]
    if (step + 1) % settings.cycle == 0 and batch_size >= 2:  # CLO-v2's cross-level step
        gen = torch.Generator().manual_seed(step)
        d2 = torch.zeros(batch_size, dtype=torch.bool)
        d2[torch.randperm(batch_size, generator=gen)[: batch_size // 2]] = True
        d2 = d2.to(labels.device)
        on_d1 = leebert_rows(ce, kd, weights)[~d2].mean()
        # D2 teaches the weights only: its per-row terms reach the weights, not the model
        on_d2 = leebert_rows(ce.detach(), kd.detach(), weights)[d2].mean()
        total = on_d1 + on_d2
    else:
        total = leebert_rows(ce, kd, weights).mean()
    return {"total": total, "last": per_exit[-1].detach(), "w_last": weights[-1, -1].detach()}
