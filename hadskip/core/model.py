"""Gated transformer layers wrapped around an HF encoder's layer list (paper Sec. 4.2).

h_i = g_i * f_i(h_{i-1}) + (1 - g_i) * h_{i-1}, with g_i in {0, 1} decided per sequence by a `SkipGate` on
h_{i-1} (mean over real tokens, or the first-token state). The HF model keeps its embeddings, masks and head; each layer in its list is
swapped for a `GatedLayer` that holds the original as `base_layer` (peft-style), and `unwrap()` puts the
originals back.

Modes of a forward pass:
- training: every layer runs on the whole batch, the gate value is ReinMax's (a sampled decision, or the
  argmax with `sample=False`), and the output is the mixture above, so gradients reach gate and layer; with
  `estimator="reinforce"` the gate value is the bare sample (no gradient through it) and the gates learn from
  p(run) alone (`hadskip.core.losses.score_function_surrogate`);
- deterministic (eval, inference): p(run) > threshold decides, and a layer runs only on the sequences
  whose gate is open (gather -> layer -> scatter), so skipping saves real time in a batch;
- open: every gate open (the teacher, and the "all gates open == unwrapped model" contract);
- forced: a given (B, L) pattern (benchmarks and tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from hadskip.core.arch import Architecture, architecture_for, attention_module_name, head_logits, layer_list
from hadskip.core.gates import RUN, SkipGate, reinmax, sample_one_hot, uncertainty
from hadskip.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
GATES_FILE = "gates.safetensors"
META_FILE = "hadskip.json"


@dataclass
class Trace:
    """What one forward pass recorded, per layer, for distillation and skip statistics."""

    embeddings: torch.Tensor | None = None  # (B, T, D) h_0, the embedding output
    hidden: list[torch.Tensor] = field(default_factory=list)  # L x (B, T, D) h_i after gating
    attentions: list[torch.Tensor | None] = field(default_factory=list)  # L x (B, T, T) head-averaged
    gates: list[torch.Tensor] = field(default_factory=list)  # L x (B,) executed: 1 (True), skipped: 0
    probs: list[torch.Tensor] = field(default_factory=list)  # L x (B,) p(run)


class RoutingState:
    """Per-forward settings shared by a GatedModel and its layers (a plain object, not a module)."""

    def __init__(self) -> None:
        self.mode = "gated"  # "gated" | "open" | "forced" | "controlled"
        self.forced: torch.Tensor | None = None  # (B, L) bool, for mode "forced"
        # mode "controlled": called as controller(layer index, layer input) -> (B,) bool, the sequences
        # that run this layer (early exit decides here instead of a gate)
        self.controller: Callable[[int, torch.Tensor], torch.Tensor] | None = None
        self.sample = True  # training: ReinMax on a sampled decision; False: on the argmax decision
        self.tau = 1.0
        self.estimator = "reinmax"  # training: "reinforce" records the sampled decision without a gradient
        self.detach_input = False  # training: the gate reads the previous layer's states detached
        self.threshold = 0.5  # deterministic decision: run iff p(run) > threshold
        self.route = True  # False: compute every layer on the whole batch and mix (reference path)
        self.record_hidden = False
        self.record_attn = False
        self.token_mask: torch.Tensor | None = None  # (B, T) 1 for real tokens, for mean-pooled gate input
        # inference: (B, 1, T) mean-pooling weights (mask / real tokens), built once per forward, or None
        # when every row is unpadded (a plain mean)
        self.pool_weights: torch.Tensor | None = None
        self.pool_ready = False
        self.return_probs = False  # inference: also compute p(run) (the full gate, softmax and all)
        # the HF task model, whose head gates with an uncertainty weight read (`head_logits`)
        self.task_model: nn.Module | None = None
        self.trace = Trace()


def _slice_batch(value: object, idx: torch.Tensor, batch: int) -> object:
    # Per-sequence tensors (masks, position ids, position biases) follow the routed subset; tensors
    # that broadcast over the batch (size 1) and everything else pass through unchanged.
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == batch:
        return value.index_select(0, idx)
    return value


class GatedLayer(nn.Module):
    """One HF layer behind a skip gate."""

    def __init__(
        self,
        base_layer: nn.Module,
        gate: SkipGate | None,
        index: int,
        arch: Architecture,
        attn_name: str | None,
        pooling: str = "first",
    ):
        super().__init__()
        self.pooling = pooling
        self.base_layer = base_layer
        self.gate = gate
        self.index = index
        self.arch = arch
        self._state_ref: weakref.ReferenceType[RoutingState] | None = None
        self._attn: torch.Tensor | None = None
        self._hooks = []
        if attn_name is not None:
            for module in base_layer.modules():
                if type(module).__name__ == attn_name:
                    self._hooks.append(module.register_forward_hook(self._capture_attention))
                    break

    @property
    def state(self) -> RoutingState:
        return self._state_ref()

    def _capture_attention(self, module: nn.Module, args: tuple, output: object) -> None:
        if self.state.record_attn and isinstance(output, tuple) and len(output) > 1:
            self._attn = output[1]

    def _call_base(self, hidden: torch.Tensor, args: Sequence, kwargs: dict) -> torch.Tensor:
        if self.state.record_attn and self.arch.attention_kwargs:
            kwargs = {**kwargs, **self.arch.attention_kwargs}
        out = self.base_layer(hidden, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def _routed(self, hidden: torch.Tensor, run: torch.Tensor, args: Sequence, kwargs: dict) -> torch.Tensor:
        """Run the base layer only on rows where `run` is True: gather, run, scatter back."""
        batch = hidden.shape[0]
        if batch == 1:  # one sequence (a single request): branch on the decision, no gather or scatter
            if bool(run):
                return self._call_base(hidden, args, kwargs)
            self._attn = None
            return hidden
        idx = run.nonzero().squeeze(1)  # the one host sync routing needs (the size of the subset)
        n_run = idx.numel()
        if n_run == batch:
            return self._call_base(hidden, args, kwargs)
        self._attn = None
        if n_run == 0:  # nothing to run: sequences that skip cost nothing further here
            return hidden
        sub_args = [_slice_batch(a, idx, batch) for a in args]
        sub_kwargs = {k: _slice_batch(v, idx, batch) for k, v in kwargs.items()}
        sub_out = self._call_base(hidden.index_select(0, idx), sub_args, sub_kwargs)
        if self._attn is not None:  # scatter the recorded attention too (zeros where skipped)
            full = self._attn.new_zeros((batch, *self._attn.shape[1:]))
            self._attn = full.index_copy(0, idx, self._attn)
        return hidden.index_copy(0, idx, sub_out.to(hidden.dtype))

    def _gate_input(self, h: torch.Tensor) -> torch.Tensor:
        """The gate reads the mean over real tokens, or the first-token state."""
        dtype = self.gate.fc1.weight.dtype  # gates stay fp32 whatever the backbone's dtype
        if self.state.detach_input:  # no gradient from the gate back into the encoder
            h = h.detach()
        if self.pooling == "first" or self.state.token_mask is None:
            return h[:, 0].to(dtype) if self.pooling == "first" else h.mean(1).to(dtype)
        m = self.state.token_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        return ((h * m).sum(1) / m.sum(1).clamp_min(1.0)).to(dtype)

    def _pooled_for_inference(self, h: torch.Tensor) -> torch.Tensor:
        """The gate's input at inference: the same pooling as `_gate_input`, in one kernel per layer (the
        weights of the masked mean are built once per forward and shared by every layer)."""
        if self.pooling == "first":
            return h[:, 0]
        state = self.state
        if not state.pool_ready:
            m = state.token_mask
            if m is not None and not bool(m.all()):
                m = m.to(h.dtype)
                state.pool_weights = (m / m.sum(1, keepdim=True).clamp_min(1.0)).unsqueeze(1)
            state.pool_ready = True
        if state.pool_weights is None:
            return h.mean(1)
        return torch.bmm(state.pool_weights, h).squeeze(1)

    def _uncertainty(self, h: torch.Tensor) -> torch.Tensor | None:
        """What a gate with an uncertainty weight also reads: how unsure the model's own head is of the
        prediction it would make from h (no gradient: the head is not trained to steer the gates)."""
        if self.gate.uncertainty_weight is None:
            return None
        with torch.no_grad():
            return uncertainty(head_logits(self.state.task_model, self.arch, h.detach()))

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        state = self.state
        trace = state.trace
        h = hidden_states  # (B, T, D)
        self._attn = None
        if self.index == 0 and state.record_hidden:
            trace.embeddings = h

        probs = None
        if state.mode == "open":
            out = self._call_base(h, args, kwargs)
            gate = h.new_ones(h.shape[0])
        else:
            if state.mode == "forced":
                run = state.forced[:, self.index].to(device=h.device, dtype=torch.bool)
            elif state.mode == "controlled":
                run = state.controller(self.index, h)
            elif not self.training and not state.return_probs:  # inference: the cheap decision
                gate = self._modules["gate"]  # not self.gate: nn.Module.__getattr__ costs ~1 us at batch 1
                unc = None if gate.uncertainty_weight is None else self._uncertainty(h)
                run = gate.decide(self._pooled_for_inference(h), state.threshold, unc)
            else:
                logits = self.gate(self._gate_input(h), self._uncertainty(h))  # (B, 2)
                probs = logits.softmax(dim=-1)[:, RUN]
                # training decides by argmax, inference (with probabilities asked for) at the threshold
                run = probs > (0.5 if self.training else state.threshold)
            if state.mode == "gated" and self.training:
                one_hot = (
                    sample_one_hot(logits) if state.sample else F.one_hot(run.long(), 2).to(logits.dtype)
                )
                if state.estimator == "reinforce":  # score function: the gradient reaches p(run) only
                    gate = one_hot[:, RUN].to(h.dtype)
                else:
                    gate = reinmax(logits, one_hot, state.tau)[:, RUN].to(h.dtype)  # (B,), value 0/1
                f = self._call_base(h, args, kwargs)
                out = h + gate[:, None, None] * (f - h)
            elif state.route:
                gate = run  # bool; GatedModel.forward casts the stacked decisions once
                out = self._routed(h, run, args, kwargs)
            else:
                gate = run
                f = self._call_base(h, args, kwargs)
                out = torch.where(run[:, None, None], f, h)

        trace.gates.append(gate)
        if probs is not None:
            trace.probs.append(probs)
        if state.record_hidden:
            trace.hidden.append(out)
        if state.record_attn:
            if self._attn is None and state.mode != "forced" and bool(gate.detach().any()):
                raise ConfigError(
                    "attention distillation needs attention probabilities; load the model with "
                    "attn_implementation='eager' (the trainer does this when alpha_attn > 0)"
                )
            trace.attentions.append(None if self._attn is None else self._attn.mean(dim=1))  # (B, T, T)
            self._attn = None
        return (out,) if self.arch.layer_returns_tuple else out


@dataclass
class GatedOutput:
    logits: torch.Tensor  # (B, C), C = 1 for regression
    gates: torch.Tensor  # (B, L): 1 executed, 0 skipped (ReinMax-valued while training)
    probs: torch.Tensor | None  # (B, L) p(run), None when no gate was evaluated
    trace: Trace


class GatedModel(nn.Module):
    """An HF sequence-classification model whose layers sit behind skip gates."""

    def __init__(
        self,
        hf_model: nn.Module,
        gate_hidden_size: int = 64,
        init_run_bias: float = 0.0,
        gate_pooling: str = "mean",
        *,
        gates: bool = True,
        uncertainty_weight: float | None = None,
    ):
        """`gates=False` wraps the layers without skip gates (early-exit models route by a controller).
        `uncertainty_weight`: each gate also reads the uncertainty of the head's prediction from the gate's
        input state, with this fixed weight on it (`SkipGate`); None: the paper's gate."""
        super().__init__()
        if gate_pooling not in ("first", "mean"):
            raise ConfigError(f"gate pooling {gate_pooling!r} is not one of first, mean")
        self.gate_pooling = gate_pooling
        self.arch = architecture_for(hf_model)
        self.model = hf_model
        self.gate_hidden_size = gate_hidden_size
        self.state = RoutingState()
        self.state.task_model = hf_model
        self.threshold = 0.5  # deterministic decision: run iff p(run) > threshold (calibrated per budget)
        self.tokenizer = None  # set by `load`, for `predict`
        self.metadata: dict = {}
        layers = layer_list(hf_model, self.arch)
        self.hidden_size = hidden_size = (
            hf_model.config.hidden_size if hasattr(hf_model.config, "hidden_size") else hf_model.config.dim
        )
        attn_name = attention_module_name(hf_model, self.arch)
        param = next(hf_model.parameters())
        for i, base in enumerate(list(layers)):
            if isinstance(base, GatedLayer):
                raise ConfigError("model is already wrapped with gates")
            gate = (
                SkipGate(hidden_size, gate_hidden_size, init_run_bias, uncertainty_weight).to(
                    device=param.device
                )
                if gates
                else None
            )
            gated = GatedLayer(base, gate, i, self.arch, attn_name, gate_pooling)
            gated._state_ref = weakref.ref(self.state)
            layers[i] = gated

    # -- structure -------------------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self.gated_layers)

    @property
    def gated_layers(self) -> list[GatedLayer]:
        return list(layer_list(self.model, self.arch))

    @property
    def gate_uncertainty(self) -> bool:
        """Whether the gates also read the head's uncertainty (`SkipGate.uncertainty_weight`)."""
        return any(g.gate is not None and g.gate.uncertainty_weight is not None for g in self.gated_layers)

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.gated_layers if layer.gate is not None for p in layer.gate.parameters()]

    def added_parameters(self) -> list[nn.Parameter]:
        """What this wrapper adds to the HF model and trains at its own learning rate: the skip gates here;
        a subclass adds its own modules (early exit: internal classifiers and the LTE module)."""
        return self.gate_parameters()

    def loss_weight_parameters(self) -> list[nn.Parameter]:
        """Learned loss weights (LeeBERT's), trained without weight decay; none here."""
        return []

    def backbone_parameters(self) -> list[nn.Parameter]:
        added = {id(p) for p in self.added_parameters()} | {id(p) for p in self.loss_weight_parameters()}
        return [p for p in self.parameters() if id(p) not in added]

    def gate_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{i}.{name}": t.detach().contiguous()
            for i, layer in enumerate(self.gated_layers)
            for name, t in layer.gate.state_dict().items()
        }

    def load_gate_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, layer in enumerate(self.gated_layers):
            prefix = f"{i}."
            layer.gate.load_state_dict(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            )

    @contextlib.contextmanager
    def unwrapped(self) -> Iterator[nn.Module]:
        """Temporarily put the original layers back (for saving a plain HF checkpoint)."""
        layers = layer_list(self.model, self.arch)
        gated = list(layers)
        for i, g in enumerate(gated):
            layers[i] = g.base_layer
        try:
            yield self.model
        finally:
            for i, g in enumerate(gated):
                layers[i] = g

    def unwrap(self) -> nn.Module:
        """Give the plain HF model back (gates dropped, hooks removed); this wrapper is unusable afterwards."""
        layers = layer_list(self.model, self.arch)
        for i, g in enumerate(list(layers)):
            for hook in g._hooks:
                hook.remove()
            layers[i] = g.base_layer
        model, self.model = self.model, None
        return model

    def train_without_dropout(self) -> GatedModel:
        """Training mode for the gates (ReinMax decisions, mixed outputs) with every HF module in eval mode,
        so no dropout anywhere: the student's states are then comparable with the eval-mode teacher's."""
        self.eval()
        self.training = True
        for layer in self.gated_layers:
            layer.training = True  # not recursive: the base layer stays in eval mode
            if layer.gate is not None:
                layer.gate.train()
        return self

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[GatedModel]:
        """Eval mode for a block, then every module's own mode back exactly as it was."""
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            yield self
        finally:
            for m, training in modes.items():
                m.training = training

    def set_attn_implementation(self, name: str) -> None:
        """Switch attention kernels ("eager" records attention maps; "sdpa" is faster)."""
        if self.model.config._attn_implementation != name:
            self.model.set_attn_implementation(name)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        open_gates: bool = False,
        forced_gates: torch.Tensor | None = None,
        record_hidden: bool = False,
        record_attn: bool = False,
        sample: bool = True,
        route: bool = True,
        threshold: float | None = None,
        tau: float = 1.0,
        estimator: str = "reinmax",
        controller: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
        detach_gate_input: bool = False,
        return_probs: bool = False,
    ) -> GatedOutput:
        """`return_probs`: at inference also compute p(run) per gate (`GatedOutput.probs`); otherwise each
        gate only decides (`SkipGate.decide`) and `probs` is None. Training always records them."""
        state = self.state
        if open_gates:
            state.mode = "open"
        elif forced_gates is not None:
            state.mode = "forced"
        elif controller is not None:
            state.mode = "controlled"
        else:
            state.mode = "gated"
        state.forced, state.controller = forced_gates, controller
        state.sample, state.route, state.tau = sample, route, tau
        state.estimator = estimator
        state.detach_input = detach_gate_input
        state.return_probs = return_probs
        state.threshold = self.threshold if threshold is None else threshold
        state.record_hidden, state.record_attn = record_hidden, record_attn
        state.token_mask = attention_mask
        state.pool_weights, state.pool_ready = None, False
        state.trace = trace = Trace()
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        try:
            logits = self.model(**kwargs).logits
        finally:
            state.trace = Trace()
            state.forced = state.token_mask = state.controller = state.pool_weights = None
        gates = torch.stack(trace.gates, dim=1)
        if gates.dtype == torch.bool:  # routed decisions are recorded as bools: one cast, not one a layer
            gates = gates.to(logits.dtype)
        probs = torch.stack(trace.probs, dim=1) if len(trace.probs) == len(trace.gates) else None
        return GatedOutput(logits=logits, gates=gates, probs=probs, trace=trace)

    # -- save / load -----------------------------------------------------------------------------------
    # A checkpoint is a plain HF checkpoint (safetensors) + this wrapper's own tensors (ADDED_FILE) +
    # hadskip.json (+ the tokenizer). Subclasses say what their tensors and settings are.
    ADDED_FILE = GATES_FILE
    KIND_NAME = "HadSkip"

    def _added_tensors(self) -> dict[str, torch.Tensor]:
        return self.gate_state_dict()

    def _meta(self) -> dict:
        return {
            "gate_hidden_size": self.gate_hidden_size,
            "gate_pooling": self.gate_pooling,
            "gate_uncertainty": self.gate_uncertainty,
            "threshold": self.threshold,
        }

    @classmethod
    def _from_meta(cls, hf: nn.Module, meta: dict, tensors: dict[str, torch.Tensor]) -> GatedModel:
        model = cls(
            hf,
            int(meta["gate_hidden_size"]),
            gate_pooling=meta.get("gate_pooling", "first"),
            uncertainty_weight=0.0 if meta.get("gate_uncertainty") else None,  # the saved value is loaded
        )
        model.load_gate_state_dict(tensors)
        model.threshold = float(meta.get("threshold", 0.5))
        return model

    def save_pretrained(self, path: str | Path, tokenizer=None, metadata: dict | None = None) -> None:
        """A plain HF checkpoint (safetensors) + the added tensors + hadskip.json (+ tokenizer)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self.unwrapped() as hf:
            hf.save_pretrained(path, safe_serialization=True)
        save_file(
            {k: v.detach().contiguous() for k, v in self._added_tensors().items()},
            str(path / self.ADDED_FILE),
        )
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
        meta = {
            "format": CHECKPOINT_FORMAT,
            "num_layers": self.num_layers,
            **self._meta(),
            **({"metadata": metadata} if metadata else {}),
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> GatedModel:
        """Load a checkpoint written by `save_pretrained`; the tokenizer comes along when it was saved."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        for name in (META_FILE, cls.ADDED_FILE, "config.json"):
            if not (path / name).is_file():
                raise CheckpointError(f"{path} is not a {cls.KIND_NAME} checkpoint: {name} is missing")
        try:
            meta = json.loads((path / META_FILE).read_text())
            if meta.get("format", 0) > CHECKPOINT_FORMAT:
                raise CheckpointError(
                    f"{path} was written by a newer hadskip (format {meta['format']}, this one reads "
                    f"<= {CHECKPOINT_FORMAT}); upgrade hadskip"
                )
            hf = AutoModelForSequenceClassification.from_pretrained(path)
            model = cls._from_meta(hf, meta, load_file(str(path / cls.ADDED_FILE)))
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
            raise CheckpointError(
                f"checkpoint {path} is corrupted or incomplete ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from None
        model.metadata = meta.get("metadata", {})
        with contextlib.suppress(Exception):  # the tokenizer is optional in a checkpoint
            model.tokenizer = AutoTokenizer.from_pretrained(path)
        return model.to(device).eval()

    # -- inference on raw text -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        batch_size: int = 32,
        max_length: int = 128,
    ) -> dict[str, list]:
        """Predict on raw text with the saved tokenizer. Returns labels (or scores), and the layers each
        sequence executed."""
        if self.tokenizer is None:
            raise ConfigError(
                "this model has no tokenizer; load it with hadskip.load(path) or set .tokenizer"
            )
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = {"prediction": [], "layers": []}
        try:
            for start in range(0, len(texts), batch_size):
                a = list(texts[start : start + batch_size])
                b = None if pairs is None else list(pairs[start : start + batch_size])
                enc = self.tokenizer(
                    a, b, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
                )
                enc = {
                    k: v.to(device)
                    for k, v in enc.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")
                }
                res = self(**enc)
                logits = res.logits.float()
                pred = logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)
                out["prediction"].extend(pred.tolist())
                out["layers"].extend([i for i, g in enumerate(row) if g] for row in res.gates.bool().tolist())
        finally:
            self.train(was_training)
        return out
