"""`hadskip curve`: every accuracy-latency trade-off one trained checkpoint offers, as results rows."""

from __future__ import annotations

import argparse

from hadskip.errors import ConfigError

HELP = "sweep a checkpoint's inference threshold: dev metric, mean layers and latency per point"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a HadSkip or early-exit checkpoint folder")
    p.add_argument("--task", required=True, help="GLUE task whose dev split to evaluate on")
    p.add_argument("--data-dir", help="GLUE-layout folder; default: the checkpoint run's, else the hub")
    p.add_argument("--points", type=int, default=20, help="thresholds to evaluate (default 20)")
    p.add_argument("--out", help="results folder to add the curve's rows to (default <checkpoint>/curve)")
    p.add_argument("--latency-rows", type=int, default=128, help="dev rows timed per point (0: no latency)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch threads on CPU")


def run(args: argparse.Namespace) -> int:
    import torch

    from hadskip.core.runtime import Runtime, pick_device
    from hadskip.run.curve import CurveOptions, trace_curve
    from hadskip.tables import Column, text_table

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ConfigError(f"--device {args.device!r} is not one of cpu, cuda")
    runtime = Runtime(device=pick_device(args.device))
    rows = trace_curve(
        args.checkpoint,
        args.task,
        data_dir=args.data_dir,
        out=args.out,
        runtime=runtime,
        options=CurveOptions(points=args.points, latency_rows=args.latency_rows),
    )
    print(
        text_table(
            rows,
            [
                Column("gate_threshold", "threshold", ".4g"),
                Column("mean_layers", "layers", ".2f"),
                Column("metric", rows[0].metric_name, ".4f"),
                Column("latency_b1_ms", "ms/seq b1", ".2f"),
                Column("latency_b32_ms", "ms/seq b32", ".3f"),
                Column("speedup", "speed-up b32", ".2f"),
            ],
        )
    )
    where = args.out or f"{args.checkpoint}/curve"
    print(f"{len(rows)} curve points on {rows[0].device or args.device} -> {where}")
    return 0
