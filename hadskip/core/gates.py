"""The skip gate and the ReinMax gradient estimator (paper Sec. 4.2 and appendix C, Algorithm 1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SKIP, RUN = 0, 1  # index of each decision in the gate's two logits


class SkipGate(nn.Module):
    """g(h_{i-1}; w_i): a one-hidden-layer feed-forward net on a pooled state of h_{i-1}, logits over
    {skip, run}.

    The state is layer-normalised first and the weights start large enough that the decision already varies
    across inputs: with small initial weights every input gets the same p(run), the bias alone learns the
    budget, and the gate ends up choosing one fixed set of layers for every sequence (seen here).
    """

    def __init__(
        self,
        hidden_size: int,
        gate_hidden_size: int = 64,
        init_run_bias: float = 0.0,
        uncertainty_weight: float | None = None,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, gate_hidden_size)  # default init: pre-activations of std ~0.6
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(gate_hidden_size, 2)
        nn.init.normal_(self.fc2.weight, std=gate_hidden_size**-0.5)  # logits of std ~0.5 across inputs
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([0.0, init_run_bias]))
        # w in logit(run) += w * (u - 1/2), u in [0, 1] the uncertainty of the prediction the model would make
        # if it stopped here (`uncertainty`); None: the gate reads only the pooled state (the paper's gate).
        # A fixed prior, not learned: until the head has learned to read shallow states every u is about 1, so
        # a learned w would only be a second bias, and the budget penalty would drive it down, even negative.
        if uncertainty_weight is None:
            self.uncertainty_weight = None
        else:
            self.register_buffer("uncertainty_weight", torch.tensor(float(uncertainty_weight)))

    def forward(self, pooled: torch.Tensor, uncertainty: torch.Tensor | None = None) -> torch.Tensor:
        # (B, D) -> (B, 2); computed in float32 so the decision does not flip under half precision
        logits = self.fc2(self.act(self.fc1(self.norm(pooled)))).float()
        if self.uncertainty_weight is None:
            return logits
        shift = self.uncertainty_weight * (uncertainty.float() - 0.5)
        return logits + torch.stack([torch.zeros_like(shift), shift], dim=-1)

    def decide(
        self, pooled: torch.Tensor, threshold: float, uncertainty: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The inference decision p(run) > threshold, cheaply: (B, D) -> (B,) bool.

        p(run) = softmax(logits)[run] = sigmoid(logit_run - logit_skip), so the decision is the logit
        difference against logit(threshold): no softmax, and one output row instead of two. The layer
        norm's scale and shift are folded into fc1 (refolded whenever a weight changes or moves), leaving
        four kernels: normalise, matmul + bias, tanh, matrix-vector + bias. Equal to `forward`'s decision
        up to float rounding at the threshold itself.
        """
        w1, b1, w2, b2, eps = self._folded()
        x = F.layer_norm(pooled.to(w1.dtype), pooled.shape[-1:], eps=eps)
        margin = torch.addmv(b2, torch.tanh(torch.addmm(b1, x, w1)), w2)
        weight = self.uncertainty_weight
        if weight is not None:
            margin = margin + weight.float() * (uncertainty.float() - 0.5)
        return margin > logit(threshold)

    def _folded(self) -> tuple:
        # The six tensors read from the modules' own dicts: at batch 1 the nine nn.Module.__getattr__ lookups
        # of `self.norm.weight`-style access cost ~1 us each, more than the check itself.
        modules = self._modules
        norm, fc1, fc2 = modules["norm"], modules["fc1"], modules["fc2"]
        n, a, b = norm._parameters, fc1._parameters, fc2._parameters
        params = (n["weight"], n["bias"], a["weight"], a["bias"], b["weight"], b["bias"])
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if self.__dict__.get("_fold_key") != key:
            with torch.no_grad():
                gamma, beta, w, bias, w2, b2 = (p.float() for p in params)
                self._fold = (
                    (w * gamma).t().contiguous(),
                    bias + w @ beta,
                    (w2[RUN] - w2[SKIP]).contiguous(),
                    b2[RUN] - b2[SKIP],
                    norm.eps,
                )
            self._fold_key = key
        return self._fold


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) head logits -> (B,) normalised entropy of the prediction in [0, 1] (1: uniform); 0 for a
    regression head (C = 1), which has no predictive distribution."""
    if logits.shape[-1] == 1:
        return logits.new_zeros(logits.shape[0], dtype=torch.float32)
    logp = logits.float().log_softmax(dim=-1)
    return -(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])


def logit(p: float) -> float:
    """log(p / (1 - p)), -inf at p <= 0 and inf at p >= 1 (every layer runs, or none)."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def sample_one_hot(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """D ~ Categorical(softmax(logits)) as a one-hot tensor of the logits' shape."""
    probs = logits.detach().softmax(dim=-1).reshape(-1, logits.shape[-1])
    idx = torch.multinomial(probs, num_samples=1, replacement=True, generator=generator)
    return torch.zeros_like(probs).scatter_(-1, idx, 1.0).reshape(logits.shape)


def reinmax(logits: torch.Tensor, one_hot: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """ReinMax (Algorithm 1): forward value is exactly `one_hot`; the backward pass is Heun's
    second-order approximation of the gradient through the discrete sample.

    `one_hot` is the sampled decision D (from `sample_one_hot` in training). `tau` only shapes the
    backward pass, through pi_1 = (D + softmax(logits / tau)) / 2, as in the reference implementation.
    """
    pi0 = logits.softmax(dim=-1)
    # value (D + pi0_tau) / 2, gradient of a softmax evaluated at that point
    pi1_value = 0.5 * (one_hot + (logits.detach() / tau).softmax(dim=-1))
    pi1 = ((pi1_value.clamp_min(1e-20).log() - logits).detach() + logits).softmax(dim=-1)
    pi2 = 2.0 * pi1 - 0.5 * pi0
    return pi2 - pi2.detach() + one_hot


def straight_through(logits: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    """First-order straight-through estimator (for comparison with ReinMax)."""
    probs = logits.softmax(dim=-1)
    return probs - probs.detach() + one_hot
