"""Measured inference speed of a gated model against the same model with every layer (`hadskip bench-speed`).

Both run on the same dev sequences, in the same length-grouped batches (same tokenisation, same padding), after
a warm-up, with repeats interleaved (full, gated, forced, floor, full, ...) so drifting machine load hits all
alike; medians are reported. "Forced" replays the gated run's own routing decisions without computing any gate:
gated time − forced time is the gate overhead. "Floor" runs no layer at all (embeddings, masks and head only):
the work no routing can skip, which bounds the speed-up below L / mean layers where layers are cheap (short
sequences at batch 1), so each row also gives the attainable speed-up with that floor counted.
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
    floor_frac: float = 0.0  # share of the full model's time outside its layers (embeddings, head)
    attainable_speedup: float = 0.0  # the ideal with that floor counted: T / (floor + (T - floor) * mean / L)
    device: str = ""  # `device_name`
    dtype: str = ""  # the backbone's weights ("float32", "bfloat16", ...)


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


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cast_backbone(model: GatedModel, dtype: str) -> GatedModel:
    """The encoder's weights in `dtype` (fp32, bf16 or fp16), its skip gates kept in float32 so that a
    decision never flips with the serving precision."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    model.to(DTYPES[dtype])
    for layer in model.gated_layers:
        if layer.gate is not None:
            layer.gate.float()
    return model


def weights_dtype(model: GatedModel) -> str:
    """The backbone's dtype as a name ("float32", "bfloat16")."""
    return str(model.model.get_input_embeddings().weight.dtype).removeprefix("torch.")


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
    floor: bool = False,
) -> list[SpeedRow]:
    """Throughput of the gated model and of the same model with all gates open, per batch size.

    `patterns` ((N, L) bool, one row per sequence of `data`) fixes the routing instead of the gates: then
    "gated" is that routing alone and the gate overhead is not measured (reported as 0). `floor`: also time
    the no-layer pass (`floor_frac`, `attainable_speedup`; otherwise 0), a fourth of the timing again.
    """
    device = torch.device(device)
    data = _prepare(model, data, device, max_rows)
    rows = []
    for bs in batch_sizes:
        order, batches = _inputs(data, bs, device)
        # the routing each sequence gets, replayed by the forced (gate-free) runs
        if patterns is not None:
            decisions = [torch.as_tensor(patterns[idx], dtype=torch.bool, device=device) for idx in order]
        else:
            decisions = [model(**b, threshold=threshold).gates.bool() for b in batches]
        executed = torch.cat(decisions).float()
        mean_layers = float(executed.sum(1).mean())

        none = torch.zeros_like(executed[:1], dtype=torch.bool)  # (1, L): no layer runs
        floors = [none.expand(len(d), -1) for d in decisions]
        times: dict[str, list[float]] = {"full": [], "gated": [], "forced": [], "floor": []}
        modes = ["full", "gated", "forced"] if patterns is None else ["full", "forced"]
        modes += ["floor"] if floor else []
        for r in range(warmup + repeats):
            for mode in modes:
                seconds = _timed_pass(
                    model, batches, floors if mode == "floor" else decisions, mode, threshold, device
                )
                if r >= warmup:
                    times[mode].append(seconds)
        if patterns is not None:  # fixed routes: "gated" is the routing alone, no gate overhead measured
            times["gated"] = times["forced"]
        t = {k: statistics.median(v) for k, v in times.items() if v}
        n = len(data)
        L = model.num_layers
        ideal = L / mean_layers if mean_layers > 0 else float("inf")
        t_floor = min(t["floor"], t["full"]) if floor else 0.0
        attainable = t["full"] / (t_floor + (t["full"] - t_floor) * mean_layers / L) if floor else 0.0
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
                floor_frac=t_floor / t["full"],
                attainable_speedup=attainable,
                device=device_name(device),
                dtype=weights_dtype(model),
            )
        )
    return rows


@dataclass
class Latency:
    seconds: dict[int, float]  # median seconds per sequence, per batch size
    mean_layers: float  # executed layers per timed sequence


@torch.no_grad()
def measure_latency(
    model: GatedModel,
    data: Encoded,
    batch_sizes: list[int],
    *,
    device: torch.device | str = "cpu",
    repeats: int = 2,
    warmup: int = 1,
    max_rows: int | None = None,
    threshold: float | None = None,
    open_gates: bool = False,
) -> Latency:
    """Seconds per sequence of one routing alone: the gates at `threshold` (None: the model's own), or every
    layer (`open_gates`). Cheaper than `measure_speed` where only the latency of many routings of one model is
    wanted (a curve times its full model once, then each threshold once, with no gate-free replay)."""
    device = torch.device(device)
    data = _prepare(model, data, device, max_rows)
    mode = "full" if open_gates else "gated"
    seconds, executed = {}, 0.0
    for bs in batch_sizes:
        _, batches = _inputs(data, bs, device)
        if not open_gates:
            executed = sum(float(model(**b, threshold=threshold).gates.sum()) for b in batches)
        times = [
            _timed_pass(model, batches, [None] * len(batches), mode, threshold, device)
            for _ in range(warmup + repeats)
        ][warmup:]
        seconds[bs] = statistics.median(times) / len(data)
    mean_layers = float(model.num_layers) if open_gates else executed / len(data)
    return Latency(seconds=seconds, mean_layers=mean_layers)


def _prepare(model: GatedModel, data: Encoded, device: torch.device, max_rows: int | None) -> Encoded:
    """The model in eval mode with SDPA attention on `device`; the first `max_rows` rows of `data`."""
    model.eval().to(device)
    model.set_attn_implementation("sdpa")
    if max_rows is not None and len(data) > max_rows:
        data = data.subset(np.arange(max_rows))
    return data


def _inputs(data: Encoded, batch_size: int, device: torch.device) -> tuple[list[np.ndarray], list[dict]]:
    """Length-sorted batches of `data` (their row indices, and the model inputs without labels)."""
    order = batch_indices(data.lengths, batch_size, shuffle=False)
    batches = [collate(data, idx, device) for idx in order]
    for b in batches:
        b.pop("labels", None)
    return order, batches


def _timed_pass(model, batches, decisions, mode: str, threshold, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for b, d in zip(batches, decisions, strict=True):
        if mode == "full":
            model(**b, open_gates=True)
        elif mode in ("forced", "floor"):
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
            Column("floor_frac", "floor", ".1%"),
            Column("attainable_speedup", "attainable", ".2f"),
            Column("mean_layers", "layers", ".2f"),
        ],
    )
