"""The one training loop. A `Stage` says what trains, with which optimiser settings, and what it minimises
(its `loss`), so the loop never names a method: HadSkip's stages (`hadskip.core.stages`) and every
early-exit baseline (`hadskip.baselines`) run through `fit`. Multi-worker runs (Ray Train) average
gradients across workers after each backward pass, so no model is re-wrapped between stages.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from hadskip.config import OptimSettings
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime, TrainingDiverged
from hadskip.core.schedule import lr_factor, steps_for
from hadskip.data.encoding import Encoded, batch_indices, iterate

log = logging.getLogger(__name__)

# loss(model, batch, step) -> named loss terms; "total" is what gets minimised
StageLoss = Callable[[GatedModel, dict[str, torch.Tensor], int], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Stage:
    name: str  # shown in logs and progress, e.g. "stage III k=3"
    optim: OptimSettings
    # which parameters train: the HF model's ("backbone"), the wrapper's added modules (skip gates, exit
    # heads), or all of them
    trains: Literal["backbone", "added", "all"]
    loss: StageLoss
    # learning rate of the added modules and of learned loss weights (None: `optim.lr`)
    added_lr: float | None = None
    weight_lr: float | None = None
    # attention kernel while training: "eager" when the loss reads attention maps
    attn_implementation: str | None = None
    dropout: bool = True  # False: train with every dropout off (GatedModel.train_without_dropout)
    with_rows: bool = False  # each batch also carries `rows`: the training-row indices it holds
    kind: str = ""  # what this stage is ("stage1", "stage2", "stage3", "exit"), for logs and tests
    budget: float | None = None  # the budget it trains for, where it has one


@dataclass
class StageStats:
    steps: int
    seconds: float
    losses: dict[str, float]


def param_groups(model: GatedModel, stage: Stage) -> list[dict]:
    """Optimiser groups: the backbone at `lr`; the added modules (skip gates, exit heads) at their own
    learning rate; learned loss weights at theirs, without decay. Freezes what the stage does not train."""
    added = {id(p) for p in model.added_parameters()}
    weights = {id(p) for p in model.loss_weight_parameters()}
    opt = stage.optim
    lrs = {"added": stage.added_lr or opt.lr, "weights": stage.weight_lr or opt.lr, "backbone": opt.lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        kind = "added" if id(p) in added else "weights" if id(p) in weights else "backbone"
        train = {"backbone": kind == "backbone", "added": kind == "added", "all": True}[stage.trains]
        p.requires_grad_(train)
        if not train:
            continue
        no_decay = p.ndim < 2 or kind == "weights" or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((kind, no_decay), []).append(p)
    return [
        {
            "params": params,
            "lr": lrs[kind],
            "weight_decay": 0.0 if no_decay else opt.weight_decay,
            "kind": kind,
        }
        for (kind, no_decay), params in groups.items()
    ]


def clip_gradients(groups: list[dict], max_norm: float, mode: str = "global") -> dict[str, float]:
    """Clip the gradients of optimiser groups (each with a "kind": backbone, added, weights) to `max_norm`.

    "global": one norm over every parameter. "per_group": the backbone on its own and the added modules
    (gates, exit heads, learned loss weights) on their own, each to `max_norm`. Returns the norm before
    clipping of each set ("all", or "backbone" and "added")."""
    if mode == "global":
        return {
            "all": float(torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], max_norm))
        }
    if mode != "per_group":
        raise ValueError(f"clip mode {mode!r} is not one of global, per_group")
    sets: dict[str, list[nn.Parameter]] = {}
    for g in groups:
        sets.setdefault("backbone" if g["kind"] == "backbone" else "added", []).extend(g["params"])
    return {name: float(torch.nn.utils.clip_grad_norm_(ps, max_norm)) for name, ps in sets.items()}


def _log_means(means: dict[str, float], norms: dict[str, float] | None = None) -> str:
    """The loss terms' means, then (when clipping) the mean gradient norm of each clipped set before clipping:
    a norm far above `max_grad_norm` means clipping, not the learning rate, sets that set's step."""
    text = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
    if norms:
        text += "; grad norm " + ", ".join(f"{k} {v:.3g}" for k, v in norms.items())
    return text


def fit(model: GatedModel, stage: Stage, data: Encoded, runtime: Runtime, *, seed: int) -> StageStats:
    """Train `model` through one stage."""
    groups = param_groups(model, stage)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=stage.optim.lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    per_epoch = len(
        batch_indices(
            data.lengths,
            stage.optim.batch_size,
            shuffle=False,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
    )
    total = steps_for(stage.optim.epochs, per_epoch, stage.optim.max_steps)
    warmup = int(stage.optim.warmup_ratio * total)
    if stage.attn_implementation is not None:
        model.set_attn_implementation(stage.attn_implementation)
    if stage.dropout:
        model.train()
    else:
        model.train_without_dropout()
    sums: dict[str, float] = {}
    norm_sums: dict[str, float] = {}  # gradient norms before clipping, per clipped set
    count = 0
    start = time.perf_counter()
    show = runtime.is_main and (sys.stderr.isatty() if runtime.progress is None else runtime.progress)
    bar = tqdm(total=total, desc=stage.name, disable=not show, dynamic_ncols=True, leave=False)
    step, epoch = 0, 0
    try:
        while step < total:
            order = batch_indices(
                data.lengths,
                stage.optim.batch_size,
                shuffle=True,
                seed=seed * 1000 + epoch,
                rank=runtime.rank,
                world_size=runtime.world_size,
            )
            for idx, batch in iterate(data, order, runtime.device):
                if stage.with_rows:
                    batch["rows"] = torch.as_tensor(idx, dtype=torch.long)
                if step >= total:
                    break
                factor = lr_factor(step, total, warmup)
                for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    g["lr"] = lr * factor
                terms = stage.loss(model, batch, step)
                loss = terms["total"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"{stage.name}: loss became {loss.item()} at step {step + 1}/{total} "
                        f"(lr {stage.optim.lr:g}); try a smaller learning rate"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                runtime.average_gradients(params)
                if stage.optim.max_grad_norm is not None:
                    norms = clip_gradients(
                        optimizer.param_groups, stage.optim.max_grad_norm, stage.optim.clip
                    )
                    for k, v in norms.items():
                        norm_sums[k] = norm_sums.get(k, 0.0) + v
                optimizer.step()
                step += 1
                count += 1
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                bar.update(1)
                if step % 10 == 0 or step == total:
                    bar.set_postfix(
                        {k: f"{v / count:.3f}" for k, v in sums.items() if k in ("total", "layers")}
                    )
                if step % runtime.log_every == 0 or step == total:
                    means = {k: v / count for k, v in sums.items()}
                    if runtime.on_step is not None:
                        runtime.on_step(stage.name, step, total, means)
                    if not show and runtime.is_main:
                        norms = {k: v / count for k, v in norm_sums.items()}
                        log.info("%s: step %d/%d, %s", stage.name, step, total, _log_means(means, norms))
            epoch += 1
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(True)
    seconds = time.perf_counter() - start
    means = {k: v / max(count, 1) for k, v in sums.items()}
    norms = {k: v / max(count, 1) for k, v in norm_sums.items()}
    log.info("%s: %d steps in %.1fs, %s", stage.name, total, seconds, _log_means(means, norms))
    return StageStats(steps=total, seconds=seconds, losses=means)
