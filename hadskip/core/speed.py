"""Measured inference speed of a gated model against the same model with every layer (`hadskip bench-speed`).

Both run on the same dev sequences, in the same length-grouped batches (same tokenisation, same padding), after
a warm-up, with repeats interleaved (full, gated, forced, full, gated, forced, ...) so drifting machine load hits
all three alike; medians are reported. "Forced" replays the gated run's own routing decisions without computing
any gate: gated time − forced time is the gate overhead.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from hadskip.core.model import GatedModel
from hadskip.data.encoding import Encoded, batch_indices, collate
from hadskip.tables import Column, text_table


@dataclass
class SpeedRow:
    batch_size: int
    full_seq_per_s: float
    gated_seq_per_s: float
    speedup: float  # measured: gated throughput / full throughput
    ideal_speedup: float  # L / mean executed layers
    efficiency: float  # speedup / ideal_speedup
    gate_overhead_frac: float  # share of the gated time spent computing gates
    mean_layers: float
    sequences: int


def device_name(device: torch.device | str) -> str:
    """What a speed or latency figure was measured on: "cpu: <processor> (2 threads)", or
    "cuda: NVIDIA H100 80GB HBM3"."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"{device.type}: {_processor()} ({threads} thread{'s' if threads != 1 else ''})"


def _processor() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown processor"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_speed(
    model: GatedModel,
    data: Encoded,
    batch_sizes: list[int],
    *,
    device: torch.device | str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    max_rows: int | None = None,
    threshold: float | None = None,
    patterns: np.ndarray | None = None,
) -> list[SpeedRow]:
    """Throughput of the gated model and of the same model with all gates open, per batch size.

    `patterns` ((N, L) bool, one row per sequence of `data`) fixes the routing instead of the gates: then
    "gated" is that routing alone and the gate overhead is not measured (reported as 0).
    """
    device = torch.device(device)
    model.eval().to(device)
    model.set_attn_implementation("sdpa")
    if max_rows is not None and len(data) > max_rows:
        data = data.subset(np.arange(max_rows))
    rows = []
    for bs in batch_sizes:
        order = batch_indices(data.lengths, bs, shuffle=False)
        batches = [collate(data, idx, device) for idx in order]
        for b in batches:
            b.pop("labels", None)
        # the routing each sequence gets, replayed by the forced (gate-free) runs
        if patterns is not None:
            decisions = [torch.as_tensor(patterns[idx], dtype=torch.bool, device=device) for idx in order]
        else:
            decisions = [model(**b, threshold=threshold).gates.bool() for b in batches]
        executed = torch.cat(decisions).float()
        mean_layers = float(executed.sum(1).mean())

        times: dict[str, list[float]] = {"full": [], "gated": [], "forced": []}
        modes = ["full", "gated", "forced"] if patterns is None else ["full", "forced"]
        for r in range(warmup + repeats):
            for mode in modes:
                seconds = _timed_pass(model, batches, decisions, mode, threshold, device)
                if r >= warmup:
                    times[mode].append(seconds)
        if patterns is not None:  # fixed routes: "gated" is the routing alone, no gate overhead measured
            times["gated"] = times["forced"]
        t = {k: statistics.median(v) for k, v in times.items()}
        n = len(data)
        ideal = model.num_layers / mean_layers if mean_layers > 0 else float("inf")
        speedup = t["full"] / t["gated"]
        rows.append(
            SpeedRow(
                batch_size=bs,
                full_seq_per_s=n / t["full"],
                gated_seq_per_s=n / t["gated"],
                speedup=speedup,
                ideal_speedup=ideal,
                efficiency=speedup / ideal,
                gate_overhead_frac=max(0.0, (t["gated"] - t["forced"]) / t["gated"]),
                mean_layers=mean_layers,
                sequences=n,
            )
        )
    return rows


def _timed_pass(model, batches, decisions, mode: str, threshold, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for b, d in zip(batches, decisions, strict=True):
        if mode == "full":
            model(**b, open_gates=True)
        elif mode == "forced":
            model(**b, forced_gates=d)
        else:
            model(**b, threshold=threshold)
    _sync(device)
    return time.perf_counter() - start


def format_speed(rows: list[SpeedRow]) -> str:
    return text_table(
        rows,
        [
            Column("batch_size", "batch"),
            Column("full_seq_per_s", "full seq/s", ".1f"),
            Column("gated_seq_per_s", "gated seq/s", ".1f"),
            Column("speedup", "speed-up", ".2f"),
            Column("ideal_speedup", "ideal", ".2f"),
            Column("efficiency", "efficiency", ".2f"),
            Column("gate_overhead_frac", "gate ovh", ".1%"),
            Column("mean_layers", "layers", ".2f"),
        ],
    )
