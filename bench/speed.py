"""Inference speed of skipping: measured speed-up against the ideal L / mean executed layers.

(a) a BERT-base-size encoder (12 layers, 768 hidden, random weights) on real MRPC dev sequences, each
    sequence routed through a fixed random set of 3, 6 or 9 layers (mean 6: ideal speed-up 2.0);
(b) a trained gated checkpoint (e.g. MiniLM-L6 from `hadskip train`) on real MRPC dev, its own gates deciding.

    python bench/speed.py [--checkpoint runs/mrpc/checkpoints/budget-3] [--threads 1] [--rows 64]

Goal: efficiency (measured / ideal speed-up) >= 0.90 at batch 1 and >= 0.80 at batch 32 on CPU.
With --profile it also prints where the gated batch-32 time of (a) goes (torch.profiler, top operators).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hadskip.checkpoint import load
from hadskip.core.model import GatedModel
from hadskip.core.speed import format_speed, measure_speed
from hadskip.data.encoding import batch_indices, collate, encode
from hadskip.data.tasks import get_task, load_split
from hadskip.run.backbone import resolve_model_source

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def routes(n: int, layers: int, counts: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """(n, layers) bool: each sequence runs a random subset of `counts[j]` layers, j drawn per sequence."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, layers), bool)
    for i in range(n):
        out[i, rng.choice(layers, size=rng.choice(counts), replace=False)] = True
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="trained gated checkpoint for (b); (b) is skipped without one")
    p.add_argument("--data-dir", default=str(GLUE))
    p.add_argument("--batch-sizes", default="1,8,32")
    p.add_argument("--rows", type=int, default=64, help="MRPC dev rows for (a) (BERT-base on CPU is slow)")
    p.add_argument("--rows-b", type=int, default=408, help="MRPC dev rows for (b)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    split = load_split(get_task("mrpc"), "dev", args.data_dir)

    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("minilm-l6"))  # BERT uncased vocab
    data = encode(split, tokenizer, 128).subset(np.arange(args.rows))
    torch.manual_seed(0)
    base = BertForSequenceClassification(
        BertConfig(
            num_hidden_layers=12,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            vocab_size=tokenizer.vocab_size,
        )
    )
    model = GatedModel(base.eval())
    pattern = routes(len(data), 12, (3, 6, 9))
    print(
        f"(a) BERT-base size, random weights, {len(data)} MRPC dev sequences (mean {data.lengths.mean():.0f} "
        f"tokens), fixed routes of 3/6/9 of 12 layers, {args.device}, {args.threads} threads"
    )
    print(
        format_speed(
            measure_speed(
                model,
                data,
                batch_sizes,
                device=args.device,
                repeats=args.repeats,
                patterns=pattern,
                floor=True,
            )
        )
    )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        idx = batch_indices(data.lengths, 32, shuffle=False)[0]
        batch = collate(data, idx, args.device)
        batch.pop("labels")
        forced = torch.as_tensor(pattern[idx])
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**batch, forced_gates=forced)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    if args.checkpoint:
        gated = load(args.checkpoint)
        data_b = encode(split, gated.tokenizer, 128).subset(np.arange(min(args.rows_b, len(split))))
        print(
            f"\n(b) {args.checkpoint}: {gated.num_layers} layers, threshold {gated.threshold:.3f}, "
            f"{len(data_b)} MRPC dev sequences, its own gates, {args.device}, {args.threads} threads"
        )
        print(
            format_speed(
                measure_speed(
                    gated, data_b, batch_sizes, device=args.device, repeats=args.repeats, floor=True
                )
            )
        )


if __name__ == "__main__":
    main()
