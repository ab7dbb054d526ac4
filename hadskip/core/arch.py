"""Where each supported HF encoder keeps its layer list, and how its layers are called.

The wrapper drives the HF model from outside its layer loop: only the layer list is touched, so adding an
architecture is one entry here (and a tiny-model test), never a fork of its modeling code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hadskip.errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    # attribute path from the task model's `base_model` to the nn.ModuleList of layers
    layers_path: str
    # class name of the module whose output[1] is the attention-probability tensor (B, H, T, T);
    # None: read it from the model's `_can_record_outputs["attentions"]`
    attention_module: str | None = None
    # layers return a tuple whose first item is the hidden state (else a tensor)
    layer_returns_tuple: bool = False
    # extra keyword arguments a layer needs to return attention probabilities
    attention_kwargs: dict = field(default_factory=dict)
    # how the task model's own head reads a hidden state (`head_logits`): "pooler" (BERT: base model's
    # pooler, then `classifier`), "cls_head" (a classification head with dense/activation/out_proj reading
    # the first token: RoBERTa, XLM-R, ELECTRA, MPNet), "pre_classifier" (DistilBERT)
    head: str = "cls_head"


_ENCODER = Architecture("encoder.layer")

ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture("encoder.layer", head="pooler"),
    "roberta": _ENCODER,
    "xlm-roberta": _ENCODER,
    "electra": _ENCODER,
    "mpnet": Architecture(
        "encoder.layer",
        attention_module="MPNetSelfAttention",
        layer_returns_tuple=True,
        attention_kwargs={"output_attentions": True},
    ),
    "distilbert": Architecture("transformer.layer", head="pre_classifier"),
}


def architecture_for(model: nn.Module) -> Architecture:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"unknown model type {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[model_type]


def layer_list(model: nn.Module, arch: Architecture) -> nn.ModuleList:
    node = getattr(model, "base_model", model)
    for part in arch.layers_path.split("."):
        node = getattr(node, part)
    if not isinstance(node, nn.ModuleList):
        raise ConfigError(f"{arch.layers_path} of {type(model).__name__} is not a layer list")
    return node


def attention_module_name(model: nn.Module, arch: Architecture) -> str | None:
    if arch.attention_module is not None:
        return arch.attention_module
    recorded = getattr(type(model), "_can_record_outputs", None) or {}
    target = recorded.get("attentions")
    target = getattr(target, "target_class", target)  # an OutputRecorder wraps the class
    return target.__name__ if isinstance(target, type) else None


def head_logits(model: nn.Module, arch: Architecture, hidden: torch.Tensor) -> torch.Tensor:
    """The task model's own head applied to any layer's states (B, T, D) -> (B, C), without its dropout: the
    prediction the model would make if every later layer were skipped."""
    if arch.head == "pooler":
        return model.classifier(model.base_model.pooler(hidden))
    if arch.head == "pre_classifier":
        return model.classifier(torch.relu(model.pre_classifier(hidden[:, 0])))
    head = model.classifier
    act = getattr(head, "activation", None) or torch.tanh
    return head.out_proj(act(head.dense(hidden[:, 0])))
