"""`hadskip bench-speed`: a checkpoint's measured inference speed-up over the same model with every layer."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from hadskip.cli.args import positive_ints
from hadskip.errors import ConfigError

HELP = "measure the gated model's inference speed-up over the same model with every layer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint folder (hadskip train writes checkpoints/budget-<k>)")
    p.add_argument("--task", required=True, help="GLUE task whose dev split to time on")
    p.add_argument("--data-dir", help="GLUE-layout folder; default: the hub's nyu-mll/glue")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma list (default 1,8,32), e.g. 1,8,32,128,512")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--dtype",
        default="fp32",
        help="the encoder's weights: fp32 (default), bf16 or fp16; the gates stay float32",
    )
    p.add_argument("--threads", type=int, help="torch threads on CPU")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-rows", type=int, default=512, help="dev rows to time on (default 512)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    import torch

    from hadskip.checkpoint import load
    from hadskip.core.speed import DTYPES, cast_backbone, format_speed, measure_speed
    from hadskip.data.encoding import encode
    from hadskip.data.tasks import get_task, load_split

    batch_sizes = positive_ints(args.batch_sizes, "--batch-sizes")
    for flag, value in (
        ("--repeats", args.repeats),
        ("--max-rows", args.max_rows),
        ("--max-length", args.max_length),
        ("--threads", args.threads),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value} must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ConfigError(f"--device {args.device!r} is not one of cpu, cuda")
    if args.dtype not in DTYPES:
        raise ConfigError(f"--dtype {args.dtype!r} is not one of {', '.join(DTYPES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = cast_backbone(load(args.checkpoint), args.dtype)
    if model.tokenizer is None:
        raise ConfigError(f"checkpoint {args.checkpoint} has no tokenizer saved beside it")
    data = encode(load_split(get_task(args.task), "dev", args.data_dir), model.tokenizer, args.max_length)
    rows = measure_speed(
        model, data, batch_sizes, device=args.device, repeats=args.repeats, max_rows=args.max_rows, floor=True
    )
    threads = torch.get_num_threads()
    if args.json:
        print(
            json.dumps(
                {
                    "checkpoint": args.checkpoint,
                    "task": args.task,
                    "device": rows[0].device,
                    "dtype": rows[0].dtype,
                    "threads": threads,
                    "rows": [asdict(r) for r in rows],
                }
            )
        )
    else:
        print(
            f"{args.checkpoint} on {args.task} dev ({rows[0].sequences} sequences), {rows[0].device}, {rows[0].dtype}"
        )
        print(format_speed(rows))
    return 0
