"""Measured inference speed of a gated model against the same model with every layer: `hadskip bench-speed`.

Both run on the same dev sequences, in the same length-grouped batches (same tokenisation, same padding), after
a warm-up, with repeats interleaved (full, gated, forced, full, gated, forced, ...) so drifting machine load hits
all three alike; medians are reported. "Forced" replays the gated run's own routing decisions without computing
any gate: gated time − forced time is the gate overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hadskip.cli import command
from hadskip.data import Encoded, batch_indices, collate
from hadskip.errors import ConfigError
from hadskip.model import GatedModel


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
    head = (f"{'batch':>5} {'full seq/s':>11} {'gated seq/s':>12} {'speed-up':>9} {'ideal':>6} {'efficiency':>10} "
            f"{'gate ovh':>8} {'layers':>6}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.batch_size:>5} {r.full_seq_per_s:>11.1f} {r.gated_seq_per_s:>12.1f} {r.speedup:>9.2f} "
                     f"{r.ideal_speedup:>6.2f} {r.efficiency:>10.2f} {r.gate_overhead_frac:>8.1%} {r.mean_layers:>6.2f}")  # fmt: skip
    return "\n".join(lines)


# -- CLI -------------------------------------------------------------------------------------------------


def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", help="a gated checkpoint folder (hadskip train writes checkpoints/budget-<k>)"
    )
    p.add_argument("--task", required=True, help="GLUE task whose dev split to time on")
    p.add_argument("--data-dir", help="GLUE-layout folder; default: the hub's nyu-mll/glue")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma list (default 1,8,32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch threads on CPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-rows", type=int, default=512, help="dev rows to time on (default 512)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _positive_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} {text!r} must be a comma list of positive integers, e.g. 1,8,32")
    return values


@command("bench-speed", "measure the gated model's inference speed-up over the same model with every layer")(
    _bench_args
)
def _bench_speed(args: argparse.Namespace) -> int:
    from hadskip.data import encode
    from hadskip.model import load
    from hadskip.tasks import get_task, load_split

    batch_sizes = _positive_ints(args.batch_sizes, "--batch-sizes")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats} must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ConfigError(f"--device {args.device!r} is not one of cpu, cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.checkpoint)
    if model.tokenizer is None:
        raise ConfigError(f"checkpoint {args.checkpoint} has no tokenizer saved beside it")
    split = load_split(get_task(args.task), "dev", args.data_dir)
    data = encode(split, model.tokenizer, args.max_length)
    rows = measure_speed(
        model, data, batch_sizes, device=args.device, repeats=args.repeats, max_rows=args.max_rows
    )
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "task": args.task, "device": args.device,
                          "threads": torch.get_num_threads(), "rows": [asdict(r) for r in rows]}))  # fmt: skip
    else:
        print(f"{args.checkpoint} on {args.task} dev ({rows[0].sequences} sequences), {args.device}, "
              f"{torch.get_num_threads()} threads")  # fmt: skip
        print(format_speed(rows))
    return 0
