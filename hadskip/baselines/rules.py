"""Exit rules, and the calibration of an exit threshold to a budget.

Every exit rule is "exit at the first layer whose score reaches the threshold": the score is the negative
entropy (DeeBERT), the number of consecutive agreeing predictions (PABEE, LeeBERT), or the learned
certainty of the LTE module (BERxiT). The same `ExitRule` computes scores online (in the exit controller)
and offline (all layers at once, for calibration), so the threshold calibrated on training rows is the one
the deployed model applies. `first_exit` and `calibrate_exit` are pure functions of a score matrix.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RULES = ("static", "entropy", "patience", "lte")


class ExitRule:
    """Scores layer by layer: `step(logits, cls)` -> (B,) score of exiting at this layer (higher: surer)."""

    name = "rule"

    def reset(self, batch: int, device: torch.device) -> None:  # noqa: B027 - stateless rules need nothing
        pass

    def step(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EntropyRule(ExitRule):
    """DeeBERT / BranchyNet: exit when the prediction's entropy is low; score = -entropy."""

    name = "entropy"

    def step(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        return (logp.exp() * logp).sum(-1)  # = -entropy


class PatienceRule(ExitRule):
    """PABEE: score = how many consecutive internal classifiers agreed so far (classification: same argmax;
    regression: change below `delta`). Patience p means: exit when the score reaches p."""

    name = "patience"

    def __init__(self, delta: float = 0.05):
        self.delta = delta
        self.prev: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def reset(self, batch: int, device: torch.device) -> None:
        self.prev, self.count = None, torch.zeros(batch, device=device)

    def step(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        pred = logits.float()[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)
        if self.prev is not None:
            same = (pred - self.prev).abs() < self.delta if logits.shape[-1] == 1 else pred == self.prev
            self.count = torch.where(same, self.count + 1, torch.zeros_like(self.count))
        self.prev = pred
        return self.count.clone()


class LteRule(ExitRule):
    """BERxiT's learning-to-exit: score = the LTE module's certainty u_i = sigmoid(c^T h_i + b)."""

    name = "lte"

    def __init__(self, lte: nn.Module):
        self.lte = lte

    def step(self, logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.lte(cls.to(self.lte.weight.dtype))).squeeze(-1).float()


def first_exit(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Executed layers per row (1..L): the first layer whose score reaches `threshold`; the last layer
    always ends it. `scores` is (N, L - 1): the internal exits' scores, layer 1 first."""
    n, internal = scores.shape
    hit = scores >= threshold
    return np.where(hit.any(1), hit.argmax(1) + 1, internal + 1)


def calibrate_exit(scores: np.ndarray, budget: float) -> tuple[float, float]:
    """The threshold whose exits execute closest to `budget` layers on average over `scores` (training
    rows, never dev); on a tie the one within the budget. Mean layers only grow with the threshold, and
    only change at the observed scores, so bisect over those. Returns (threshold, mean layers)."""
    candidates = np.unique(scores[np.isfinite(scores)])
    candidates = np.append(candidates, np.inf)  # inf: nobody exits early, every layer runs

    def mean_at(i: int) -> float:
        return float(first_exit(scores, candidates[i]).mean())

    lo, hi = 0, len(candidates) - 1  # mean_at rises with the index
    if mean_at(lo) >= budget:
        return float(candidates[lo]), mean_at(lo)
    if mean_at(hi) <= budget:
        return float(candidates[hi]), mean_at(hi)
    while hi - lo > 1:  # invariant: mean_at(lo) < budget < mean_at(hi)
        mid = (lo + hi) // 2
        m = mean_at(mid)
        if m == budget:
            return float(candidates[mid]), m
        lo, hi = (mid, hi) if m < budget else (lo, mid)
    m_lo, m_hi = mean_at(lo), mean_at(hi)
    return (float(candidates[lo]), m_lo) if budget - m_lo <= m_hi - budget else (float(candidates[hi]), m_hi)
