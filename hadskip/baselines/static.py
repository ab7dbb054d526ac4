"""Static truncation: the first k = floor(budget) layers and the model's own head; one fine-tune per budget.

Every sequence runs exactly k layers, so a fractional budget is never exceeded.
"""

from __future__ import annotations

import math

import torch

from hadskip.baselines.exit_model import ExitModel
from hadskip.config import ExitSettings
from hadskip.core import losses


def static_layers(budget: float, num_layers: int) -> int:
    """Layers a static model runs at a budget: floor(budget), at least 1, so it never exceeds the budget."""
    return max(1, min(num_layers, math.floor(budget + 1e-9)))


def loss(
    settings: ExitSettings, budget: float | None, model: ExitModel, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    """The task loss of the first static_layers(budget) layers read by the HF head."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    k = static_layers(budget, model.num_layers)
    pattern = model.static_pattern(labels.shape[0], labels.device, k)
    task = losses.task_loss(model(**inputs, forced_gates=pattern).logits, labels)
    return {"total": task, "task": task}
