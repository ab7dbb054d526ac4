"""Task, distillation and budget losses as pure functions (paper Eq. 3 and appendix B, Eqs. 5-8).

Token-level losses average over real tokens only: with dynamic padding, padded positions carry no signal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression (logits (B, 1))."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


def prediction_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """L_p, Eq. 5: KL(teacher || student) over predicted distributions (MSE of scores for regression).

    Scaled by T^2 so its gradient magnitude does not shrink with the temperature (Hinton et al., 2015).
    """
    return per_row_prediction_kd(student_logits, teacher_logits, temperature).mean()


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real tokens: (B, T, D) pairs, token_mask (B, T) of 0/1."""
    m = token_mask.to(student.dtype).unsqueeze(-1)  # (B, T, 1)
    sq = (student - teacher).pow(2) * m
    return sq.sum() / (m.sum() * student.shape[-1]).clamp_min(1.0)


def hidden_kd(
    student: list[torch.Tensor], teacher: list[torch.Tensor], token_mask: torch.Tensor
) -> torch.Tensor:
    """L_h, Eq. 6: mean over layers of the token-masked MSE between h_i and the teacher's h_i."""
    return torch.stack([masked_mse(s, t, token_mask) for s, t in zip(student, teacher, strict=True)]).mean()


def attention_kd(
    student: list[torch.Tensor | None], teacher: list[torch.Tensor], token_mask: torch.Tensor
) -> torch.Tensor:
    """L_att, Eq. 7: MSE between head-averaged attention maps (B, T, T) over real query/key pairs."""
    m = token_mask.float()
    pair = m[:, :, None] * m[:, None, :]  # (B, T, T): both query and key are real tokens
    losses = [
        masked_mse(s.unsqueeze(-1), t.unsqueeze(-1), pair)
        for s, t in zip(student, teacher, strict=True)
        if s is not None
    ]
    return torch.stack(losses).mean() if losses else token_mask.new_zeros((), dtype=torch.float32)


def embedding_kd(student: torch.Tensor, teacher: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """L_emb, Eq. 8: token-masked MSE between the embedding-layer outputs."""
    return masked_mse(student, teacher, token_mask)


def budget_penalty(
    usage: torch.Tensor, budget: float, num_layers: int, form: str = "squared"
) -> torch.Tensor:
    """Eq. 3's penalty without beta, on usage (B, L): the gate values g (sampled), or p(run) (expected).

    "squared": (mean over batch and layers - k / L)^2, Eq. 3. "relative": ((mean - k / L) / (k / L))^2, the
    miss as a fraction of the budget, so it does not shrink with the budget.
    """
    target = budget / num_layers
    miss = usage.float().mean() - target
    if form == "squared":
        return miss.pow(2)
    if form == "relative":
        return (miss / target).pow(2)
    raise ValueError(f"budget penalty form {form!r} is not one of squared, relative")


# -- per row and per exit (the early-exit baselines build on these) ----------------------------------------


def per_row_task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) cross-entropy per row, or squared error for regression."""
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1).float() - labels.float()).pow(2)
    return F.cross_entropy(logits.float(), labels, reduction="none")


def per_row_prediction_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """(B,) `prediction_kd` of each row: T^2 * KL(teacher || student), or the squared score difference."""
    if student_logits.shape[-1] == 1:
        return (student_logits.float() - teacher_logits.float()).pow(2).squeeze(-1)
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * (t * t)


def score_function_surrogate(
    row_losses: torch.Tensor,
    gates: torch.Tensor,
    probs: torch.Tensor,
    baseline_losses: torch.Tensor | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """REINFORCE (the estimator BlockDrop trains its skipping policy with) for sampled gate decisions: a scalar
    whose gradient w.r.t. p(run) is an unbiased estimate of the gradient of the expected loss,
    E[(loss - b) * grad log pi(g)]. b is each row's `baseline_losses` when given (the loss the same row gave on
    another route, e.g. the policy's most likely one: self-critical, BlockDrop's choice), else the mean loss of
    the batch's other rows (leave-one-out baseline, which leaves every row's own difficulty in its advantage).

    row_losses (B,), the loss each row's sampled route gave (no gradient flows into it); gates (B, L) the 0/1
    decisions taken; probs (B, L) p(run) of each gate. A route that loses more than its baseline has its
    decisions made less likely; the value is zero, only the gradient counts.

    normalize divides the advantages by their root mean square over the batch: the gates' pull from the task
    is then the same size whatever the loss's scale (a regression's squared error or a cross-entropy), so
    the budget penalty's weight means the same on every task; only the direction of each row's pull is kept
    (its expectation is then the expected loss's gradient only up to a scale, as the root mean square is
    itself measured on the batch).
    """
    r = row_losses.detach().float()
    n = r.shape[0]
    if baseline_losses is not None:
        advantage = r - baseline_losses.detach().float()
    elif n < 2:
        return probs.sum() * 0.0
    else:
        advantage = r - (r.sum() - r) / (n - 1)
    if normalize:
        advantage = advantage / advantage.pow(2).mean().sqrt().clamp_min(1e-8)
    p = probs.float().clamp(1e-6, 1.0 - 1e-6)
    g = gates.detach().float()
    log_pi = (g * p.log() + (1.0 - g) * (1.0 - p).log()).sum(-1)  # (B,)
    surrogate = (advantage * log_pi).mean()
    return surrogate - surrogate.detach()


def paired_score_function_surrogate(
    row_losses: torch.Tensor,
    gates: torch.Tensor,
    probs: torch.Tensor,
    other_losses: torch.Tensor,
    other_gates: torch.Tensor,
    other_probs: torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """REINFORCE with two sampled routes per row, each the other's baseline (leave-one-out over a row's own
    samples): (loss_a - loss_b) * grad log pi(a) and the reverse, averaged. Unbiased, as the samples are
    independent; a row's difficulty cancels as with a per-row baseline, but the baseline is itself a sample,
    so exploring is not penalised the way a baseline on the policy's mode penalises it. Value 0."""
    forward = score_function_surrogate(row_losses, gates, probs, other_losses, normalize)
    backward = score_function_surrogate(other_losses, other_gates, other_probs, row_losses, normalize)
    return 0.5 * (forward + backward)


def route_entropy(probs: torch.Tensor) -> torch.Tensor:
    """How undecided the gates' routes are: per row, the summed Bernoulli entropy (nats) of its gates'
    decisions, averaged over rows; probs (B, L) p(run). 0 for a fixed route, L ln 2 for a fair coin at every
    gate. Gradient flows into probs (a bonus on it pushes p(run) towards 1/2)."""
    p = probs.float().clamp(1e-6, 1.0 - 1e-6)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log()).sum(-1).mean()


def exit_task_losses(exit_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(M,) task loss of each exit, shallowest first."""
    return torch.stack([task_loss(lg, labels) for lg in exit_logits])
