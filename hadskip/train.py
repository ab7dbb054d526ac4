"""The one training loop, the three stages as data, and evaluation.

A `Stage` says what trains (backbone, gates, or all), with which optimiser settings, and at which budget;
`stage_loss` says what the stage minimises; `fit` runs any stage. Multi-worker runs (Ray Train) average
gradients across workers after each backward pass, so no model is re-wrapped between stages.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from hadskip import losses
from hadskip.config import OptimSettings, Stage3Settings
from hadskip.data import Encoded, batch_indices, iterate
from hadskip.errors import HadSkipError
from hadskip.model import GatedModel
from hadskip.schedule import lr_factor, steps_for

log = logging.getLogger(__name__)


class TrainingDiverged(HadSkipError):
    """The loss became NaN or infinite."""


@dataclass
class Runtime:
    """Where a run executes: device, and its place among data-parallel workers (1 when alone)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    progress: bool | None = None  # tqdm bars on the main worker; None: only when stderr is a terminal
    # called as on_step(stage_name, step, total_steps, losses) every `log_every` steps
    on_step: Callable[[str, int, int, dict[str, float]], None] | None = None
    log_every: int = 50

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every worker start from worker 0's weights."""
        if self.distributed:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """All-reduce gradients in one flat buffer (what DDP does, without wrapping the model)."""
        if not self.distributed or not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor(
            [value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu"
        )
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


@dataclass(frozen=True)
class Stage:
    name: str  # "stage1" | "stage2" | "stage3"
    optim: OptimSettings
    trains: str  # "backbone" | "gates" | "all"
    budget: float | None = None  # k in the budget penalty (stage III), the static exit's budget
    label: str = ""
    method: str = ""  # stage "exit": which early-exit method's loss (hadskip.methods)


@dataclass
class StageStats:
    steps: int
    seconds: float
    losses: dict[str, float]


def stage_loss(
    stage: Stage,
    model: GatedModel,
    batch: dict[str, torch.Tensor],
    teacher: GatedModel | None = None,
    s3: Stage3Settings | None = None,
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """The loss terms of one stage on one batch; "total" is what gets minimised."""
    if stage.name == "exit":  # the early-exit baselines
        from hadskip.methods import exit_loss

        return exit_loss(stage, model, batch, step)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    if stage.name == "stage1":  # Eq. 4: the vanilla model, every layer
        task = losses.task_loss(model(**inputs, open_gates=True).logits, labels)
        return {"total": task, "task": task}
    if stage.name == "stage2":  # gates only, task loss only
        s3 = s3 or Stage3Settings()
        out = model(**inputs, tau=s3.gate_tau, sample=s3.sample_gates)
        task = losses.task_loss(out.logits, labels)
        return {"total": task, "task": task, "layers": out.gates.detach().sum(1).mean()}

    assert s3 is not None and teacher is not None and stage.budget is not None
    need_hidden = s3.alpha_hidden > 0 or s3.alpha_emb > 0
    need_attn = s3.alpha_attn > 0
    with torch.no_grad():
        t = teacher(**inputs, open_gates=True, record_hidden=need_hidden, record_attn=need_attn)
    out = model(
        **inputs, record_hidden=need_hidden, record_attn=need_attn, tau=s3.gate_tau, sample=s3.sample_gates
    )
    mask = batch["attention_mask"]
    terms = {"task": losses.task_loss(out.logits, labels)}
    if s3.alpha_pred > 0:
        terms["kd_pred"] = losses.prediction_kd(out.logits, t.logits, s3.kd_temperature)
    if s3.alpha_hidden > 0:
        terms["kd_hidden"] = losses.hidden_kd(out.trace.hidden, t.trace.hidden, mask)
    if need_attn:
        terms["kd_attn"] = losses.attention_kd(out.trace.attentions, t.trace.attentions, mask)
    if s3.alpha_emb > 0:
        terms["kd_emb"] = losses.embedding_kd(out.trace.embeddings, t.trace.embeddings, mask)
    terms["budget"] = losses.budget_penalty(out.gates, stage.budget, model.num_layers)
    weights = {
        "task": 1.0,
        "kd_pred": s3.alpha_pred,
        "kd_hidden": s3.alpha_hidden,
        "kd_attn": s3.alpha_attn,
        "kd_emb": s3.alpha_emb,
        "budget": s3.beta,
    }
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    terms["layers"] = out.gates.detach().sum(1).mean()
    return terms


def _param_groups(model: GatedModel, stage: Stage) -> list[dict]:
    """Optimiser groups: the backbone at `lr`; the added modules (skip gates, exit heads) at their own
    learning rate; LeeBERT's loss weights at `weight_lr`, without decay."""
    gate_ids = {id(p) for p in model.gate_parameters()}
    weight_ids = {id(p) for p in getattr(model, "loss_weight_parameters", list)()}
    opt = stage.optim
    lrs = {
        "gate": getattr(opt, "gate_lr", None) or getattr(opt, "head_lr", None) or opt.lr,
        "weights": getattr(opt, "weight_lr", opt.lr),
        "backbone": opt.lr,
    }
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        kind = "gate" if id(p) in gate_ids else "weights" if id(p) in weight_ids else "backbone"
        train = {"backbone": kind == "backbone", "gates": kind == "gate", "all": True}[stage.trains]
        p.requires_grad_(train)
        if not train:
            continue
        no_decay = p.ndim < 2 or kind == "weights" or "LayerNorm" in name or "layer_norm" in name
        groups.setdefault((kind, no_decay), []).append(p)
    return [
        {"params": params, "lr": lrs[kind], "weight_decay": 0.0 if no_decay else opt.weight_decay}
        for (kind, no_decay), params in groups.items()
    ]


def fit(
    model: GatedModel,
    stage: Stage,
    data: Encoded,
    runtime: Runtime,
    *,
    seed: int,
    teacher: GatedModel | None = None,
    s3: Stage3Settings | None = None,
) -> StageStats:
    """Train `model` through one stage."""
    groups = _param_groups(model, stage)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=stage.optim.lr)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    per_epoch = len(batch_indices(data.lengths, stage.optim.batch_size, shuffle=False,
                                  rank=runtime.rank, world_size=runtime.world_size))  # fmt: skip
    total = steps_for(stage.optim.epochs, per_epoch, stage.optim.max_steps)
    warmup = int(stage.optim.warmup_ratio * total)
    if stage.name == "stage3" and s3 is not None and s3.alpha_attn > 0:
        model.set_attn_implementation("eager")
    model.train()
    sums: dict[str, float] = {}
    count = 0
    start = time.perf_counter()
    show = runtime.is_main and (sys.stderr.isatty() if runtime.progress is None else runtime.progress)
    bar = tqdm(total=total, desc=stage.label or stage.name, disable=not show, dynamic_ncols=True, leave=False)
    step, epoch = 0, 0
    try:
        while step < total:
            order = batch_indices(data.lengths, stage.optim.batch_size, shuffle=True, seed=seed * 1000 + epoch,
                                  rank=runtime.rank, world_size=runtime.world_size)  # fmt: skip
            for _, batch in iterate(data, order, runtime.device):
                if step >= total:
                    break
                factor = lr_factor(step, total, warmup)
                for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                    g["lr"] = lr * factor
                terms = stage_loss(stage, model, batch, teacher=teacher, s3=s3, step=step)
                loss = terms["total"]
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"{stage.label or stage.name}: loss became {loss.item()} at step {step + 1}/{total} "
                        f"(lr {stage.optim.lr:g}); try a smaller learning rate"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                runtime.average_gradients(params)
                if stage.optim.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, stage.optim.max_grad_norm)
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
                        log.info("%s: step %d/%d, %s", stage.label or stage.name, step, total,
                                 ", ".join(f"{k} {v:.4f}" for k, v in means.items()))  # fmt: skip
            epoch += 1
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(True)
    seconds = time.perf_counter() - start
    means = {k: v / max(count, 1) for k, v in sums.items()}
    log.info("%s: %d steps in %.1fs, %s", stage.label or stage.name, total, seconds,
             ", ".join(f"{k} {v:.4f}" for k, v in means.items()))  # fmt: skip
    return StageStats(steps=total, seconds=seconds, losses=means)


@dataclass
class EvalOutput:
    logits: np.ndarray  # (N, C)
    executed: np.ndarray  # (N, L) bool
    seconds: float


@torch.no_grad()
def predict(
    model: GatedModel,
    data: Encoded,
    runtime: Runtime,
    batch_size: int = 64,
    *,
    open_gates: bool = False,
    threshold: float | None = None,
) -> EvalOutput:
    """Deterministic predictions on every row of `data` (sharded over workers, gathered on all)."""
    model.eval()
    model.set_attn_implementation("sdpa")
    batches = batch_indices(data.lengths, batch_size, shuffle=False)
    mine = batches[runtime.rank :: runtime.world_size]
    rows, logits, executed = [], [], []
    start = time.perf_counter()
    for idx, batch in iterate(data, mine, runtime.device):
        batch.pop("labels")
        out = model(**batch, open_gates=open_gates, threshold=threshold)
        rows.append(idx)
        logits.append(out.logits.float().cpu().numpy())
        executed.append(out.gates.bool().cpu().numpy())
    seconds = time.perf_counter() - start
    parts = [(np.concatenate(rows), np.concatenate(logits), np.concatenate(executed))] if rows else []
    if runtime.distributed:
        gathered: list = [None] * runtime.world_size
        dist.all_gather_object(gathered, parts)
        parts = [p for g in gathered for p in g]
    idx = np.concatenate([p[0] for p in parts])
    order = np.argsort(idx)
    return EvalOutput(
        logits=np.concatenate([p[1] for p in parts])[order],
        executed=np.concatenate([p[2] for p in parts])[order],
        seconds=seconds,
    )


@torch.no_grad()
def calibrate_threshold(
    model: GatedModel,
    data: Encoded,
    budget: float,
    runtime: Runtime,
    *,
    rows: int = 1024,
    batch_size: int = 64,
    seed: int = 0,
    iters: int = 12,
) -> tuple[float, float]:
    """The decision threshold on p(run) whose deterministic routing executes closest to `budget` layers on
    average over a seeded slice of the *training* data (dev is never looked at).

    Training samples gates, so the budget penalty holds in expectation; a gate whose p(run) sits near 0.5
    would run every time at inference with the plain 0.5 threshold. Mean layers fall as the threshold
    rises, in steps (a gate that is input-independent flips for every row at once), so bisect for the step
    that crosses the budget and keep the side closer to it (the lower one on a tie). Returns
    (threshold, mean layers on the slice).
    """
    sub = data.sample(rows, seed)

    def mean_layers(t: float) -> float:
        return float(predict(model, sub, runtime, batch_size, threshold=t).executed.sum(1).mean())

    lo, hi = 0.0, 1.0  # invariant: mean_layers(lo) > budget >= mean_layers(hi)
    m_lo, m_hi = mean_layers(lo), mean_layers(hi)
    if m_lo <= budget:
        return lo, m_lo
    for _ in range(iters):
        mid = (lo + hi) / 2
        m = mean_layers(mid)
        if m > budget:
            lo, m_lo = mid, m
        else:
            hi, m_hi = mid, m
    return (lo, m_lo) if m_lo - budget < budget - m_hi else (hi, m_hi)
