"""Deterministic inference over a tokenised split, and the calibration of HadSkip's gate threshold."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.data.encoding import Encoded, batch_indices, iterate


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
    routes: np.ndarray | None = None,
) -> EvalOutput:
    """Deterministic predictions on every row of `data` (sharded over workers, gathered on all). `routes`
    (N, L) bool, one row per row of `data`: run exactly those layers for that row instead of what the gates
    decide (`hadskip routes --shuffles` runs a model on its own routes handed to other rows)."""
    if routes is not None and (routes.ndim != 2 or len(routes) != len(data)):
        raise ValueError(f"routes of shape {routes.shape} do not give one route per row of {len(data)} rows")
    model.eval()
    model.set_attn_implementation("sdpa")
    batches = batch_indices(data.lengths, batch_size, shuffle=False)
    mine = batches[runtime.rank :: runtime.world_size]
    rows, logits, executed = [], [], []
    start = time.perf_counter()
    for idx, batch in iterate(data, mine, runtime.device):
        batch.pop("labels")
        forced = None if routes is None else torch.from_numpy(routes[idx]).to(runtime.device)
        out = model(**batch, open_gates=open_gates, threshold=threshold, forced_gates=forced)
        rows.append(idx)
        logits.append(out.logits.float().cpu().numpy())
        executed.append(out.gates.bool().cpu().numpy())
    seconds = time.perf_counter() - start
    parts = [(np.concatenate(rows), np.concatenate(logits), np.concatenate(executed))] if rows else []
    parts = [p for worker in runtime.all_gather(parts) for p in worker]
    order = np.argsort(np.concatenate([p[0] for p in parts]))
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
