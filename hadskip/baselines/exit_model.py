"""The early-exit model: internal classifiers on the layer outputs, and a controller that stops each sequence
at its exit.

The early-exit baselines (static truncation, entropy exit, PABEE, BERxiT, LeeBERT) share one model,
`ExitModel`: the HF model's layers sit behind the same `GatedLayer` wrappers as HadSkip's (no skip gates),
with an `ExitHead` after each of the first L - 1 layers; the HF model's own head is the last exit. At
inference an `ExitController` decides, before each layer, which sequences go on: a sequence that exits
runs no further layer (the routing that makes HadSkip's skipped layers free makes exited layers free too),
and its prediction is the logits of the head it exited at.

Exit rules and the calibration of their thresholds live in `hadskip.baselines.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hadskip.baselines.rules import RULES, EntropyRule, ExitRule, LteRule, PatienceRule
from hadskip.core.losses import exit_task_losses
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.data.encoding import Encoded, batch_indices, iterate
from hadskip.errors import ConfigError

EXITS_FILE = "exits.safetensors"  # internal classifiers, LTE module, LeeBERT loss weights


class ExitHead(nn.Module):
    """An internal classifier on a layer's first-token state: dense, tanh, dropout, linear (BERT's head)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_labels)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.dense(cls))))


# -- the model -----------------------------------------------------------------------------------------


class ExitController:
    """Decides before each layer which sequences go on, and keeps the logits of those that exited."""

    def __init__(self, model: ExitModel, rule: ExitRule, threshold: float, batch: int, device: torch.device):
        self.model, self.rule, self.threshold = model, rule, threshold
        self.active = torch.ones(batch, dtype=torch.bool, device=device)
        self.logits: torch.Tensor | None = None  # (B, C) logits of the exit each sequence took
        rule.reset(batch, device)

    def __call__(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        if index == 0:
            return self.active
        cls = hidden[:, 0]
        logits = self.model.heads[index - 1](cls.to(self.model.heads[index - 1].out.weight.dtype))
        exit_now = self.active & (self.rule.step(logits, cls) >= self.threshold)
        if self.logits is None:
            self.logits = logits.new_zeros(logits.shape)
        self.logits = torch.where(exit_now[:, None], logits, self.logits)
        self.active = self.active & ~exit_now
        return self.active


@dataclass
class ExitOutputs:
    logits: list[torch.Tensor]  # L x (B, C): exit i's prediction, the HF head's last
    cls: list[torch.Tensor]  # L x (B, D): first-token state after each layer


class ExitModel(GatedModel):
    """An HF sequence-classification model with an internal classifier after every layer but the last.

    `rule` and `threshold` say how it exits at inference (set by the method after calibration); with rule
    "static" every sequence runs the first `static_layers` layers and the HF head reads their output.
    """

    def __init__(self, hf_model: nn.Module, method: str, rule: str, head_dropout: float = 0.1):
        super().__init__(hf_model, gates=False)
        if rule not in RULES:
            raise ConfigError(f"exit rule {rule!r} is not one of {', '.join(RULES)}")
        self.method, self.rule = method, rule
        hidden = self.hidden_size
        labels = self.config.num_labels
        param = next(hf_model.parameters())
        self.heads = nn.ModuleList(
            ExitHead(hidden, labels, head_dropout) for _ in range(self.num_layers - 1)
        ).to(param.device)
        self.lte = nn.Linear(hidden, 1).to(param.device)  # BERxiT's LTE module, shared by every layer
        self.loss_logits = nn.Parameter(torch.zeros(self.num_layers, self.num_layers, device=param.device))
        self.threshold = float("inf")  # no early exit until calibrated
        self.static_layers = self.num_layers
        self.patience_delta = 0.05

    # what the methods train beside the backbone, at their own lr: internal classifiers and the LTE module
    def added_parameters(self) -> list[nn.Parameter]:
        return [*self.heads.parameters(), *self.lte.parameters()]

    def loss_weight_parameters(self) -> list[nn.Parameter]:
        return [self.loss_logits]

    def make_rule(self) -> ExitRule:
        if self.rule == "entropy":
            return EntropyRule()
        if self.rule == "patience":
            return PatienceRule(self.patience_delta)
        if self.rule == "lte":
            return LteRule(self.lte)
        raise ConfigError(f"exit rule {self.rule!r} has no scores")

    def exit_outputs(self, **inputs) -> ExitOutputs:
        """Every layer on the whole batch, and every exit's logits (training and calibration)."""
        out = super().forward(**inputs, open_gates=True, record_hidden=True)
        cls = [h[:, 0] for h in out.trace.hidden]
        logits = [head(c) for head, c in zip(self.heads, cls, strict=False)] + [out.logits]
        return ExitOutputs(logits=logits, cls=cls)

    def exit_losses(self, batch: dict[str, torch.Tensor]) -> tuple[ExitOutputs, torch.Tensor]:
        """A training batch through every exit: the outputs, and the (M,) task loss of each exit."""
        out = self.exit_outputs(**{k: v for k, v in batch.items() if k != "labels"})
        return out, exit_task_losses(out.logits, batch["labels"])

    def static_pattern(self, batch: int, device: torch.device, layers: int | None = None) -> torch.Tensor:
        k = self.static_layers if layers is None else layers
        return (torch.arange(self.num_layers, device=device) < k).expand(batch, -1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        open_gates: bool = False,
        forced_gates: torch.Tensor | None = None,
        threshold: float | None = None,
        **kwargs,
    ):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if open_gates or forced_gates is not None:
            return super().forward(**inputs, open_gates=open_gates, forced_gates=forced_gates, **kwargs)
        if self.rule == "static":
            pattern = self.static_pattern(input_ids.shape[0], input_ids.device)
            return super().forward(**inputs, forced_gates=pattern, **kwargs)
        t = self.threshold if threshold is None else threshold
        controller = ExitController(self, self.make_rule(), t, input_ids.shape[0], input_ids.device)
        out = super().forward(**inputs, controller=controller, **kwargs)
        if controller.logits is not None:  # exited sequences answer with the head they exited at
            out.logits = torch.where(
                controller.active[:, None], out.logits, controller.logits.to(out.logits.dtype)
            )
        return out

    # -- save / load (GatedModel.save_pretrained / from_pretrained with these pieces) ----------------------
    ADDED_FILE = EXITS_FILE
    KIND_NAME = "early-exit"

    def _added_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"heads.{k}": v for k, v in self.heads.state_dict().items()}
        tensors.update({f"lte.{k}": v for k, v in self.lte.state_dict().items()})
        tensors["loss_logits"] = self.loss_logits.detach()
        return tensors

    def _meta(self) -> dict:
        return {
            "kind": "exit",
            "method": self.method,
            "rule": self.rule,
            "threshold": self.threshold if np.isfinite(self.threshold) else None,
            "static_layers": self.static_layers,
            "patience_delta": self.patience_delta,
        }

    @classmethod
    def _from_meta(cls, hf: nn.Module, meta: dict, tensors: dict[str, torch.Tensor]) -> ExitModel:
        model = cls(hf, meta["method"], meta["rule"])
        model.heads.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("heads.")})
        model.lte.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("lte.")})
        model.loss_logits.data.copy_(tensors["loss_logits"])
        threshold = meta.get("threshold")
        model.threshold = float("inf") if threshold is None else float(threshold)
        model.static_layers = int(meta.get("static_layers", model.num_layers))
        model.patience_delta = float(meta.get("patience_delta", 0.05))
        return model


@torch.no_grad()
def exit_scores(model: ExitModel, data: Encoded, runtime: Runtime, batch_size: int = 64) -> np.ndarray:
    """(N, L - 1) scores of the internal exits on every row of `data` (every layer run, deterministic)."""
    model.eval()
    model.set_attn_implementation("sdpa")
    rows, scores = [], []
    for idx, batch in iterate(data, batch_indices(data.lengths, batch_size, shuffle=False), runtime.device):
        batch.pop("labels")
        out = model.exit_outputs(**batch)
        rule = model.make_rule()
        rule.reset(len(idx), runtime.device)
        scores.append(
            torch.stack([rule.step(lg, c) for lg, c in zip(out.logits[:-1], out.cls, strict=False)], 1)
            .cpu()
            .numpy()
        )
        rows.append(idx)
    order = np.argsort(np.concatenate(rows))
    return np.concatenate(scores)[order]
