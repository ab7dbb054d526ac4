"""Where a gated model's time goes on this device, per layer: the numbers behind bench/PROFILE.md.

For a checkpoint and a task's dev sequences, at each batch size: the FLOPs and weight bytes of one layer,
the measured time of one layer (and so the GFLOP/s and GB/s it reaches), the floor (embeddings, masks, head:
the forward with no layer), and what one gate costs where it runs, right after a layer (every small op is
slower there than in a tight loop: the layer's weights and kernels have just left the caches).

    python bench/profile_layers.py CHECKPOINT [--tasks cola,mrpc] [--batch-sizes 1,32] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hadskip.checkpoint import load
from hadskip.core.speed import cast_backbone, device_name, weights_dtype
from hadskip.data.encoding import batch_indices, collate, encode
from hadskip.data.tasks import get_task, load_split

GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


def layer_flops(hidden: int, inter: int, tokens: float) -> float:
    """Multiply-adds x 2 of one BERT layer on one sequence of `tokens` tokens: the four attention projections,
    the two feed-forward matrices, and the scores and weighted sum of attention."""
    return 2 * tokens * (4 * hidden * hidden + 2 * hidden * inter) + 4 * tokens * tokens * hidden


def median_us(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def gate_cost(layer, batch: int, tokens: int, threshold: float, repeats: int) -> tuple[float, float]:
    """Microseconds of one gate decision on (batch, tokens) states: in a tight loop, and right after the layer
    (the median over many pairs of the layer alone and the layer followed by the decision; batch 1 only)."""
    gate, base = layer.gate, layer.base_layer
    h = torch.randn(batch, tokens, gate.norm.normalized_shape[0], dtype=next(base.parameters()).dtype)

    def decide():
        gate.decide(h.mean(1), threshold)

    tight = median_us(lambda: [decide() for _ in range(200)], repeats) / 200
    if batch > 1:  # the layer's own jitter at a large batch swamps a gate's microseconds
        return tight, float("nan")
    pairs = []
    for _ in range(20 * repeats):
        alone = median_us(lambda: base(h), 1)
        start = time.perf_counter()
        base(h)
        decide()
        pairs.append((time.perf_counter() - start) * 1e6 - alone)
    return tight, statistics.median(pairs)


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--tasks", default="cola,mrpc")
    p.add_argument("--data-dir", default=str(GLUE))
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--rows", type=int, default=64, help="dev sequences per task")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = cast_backbone(load(args.checkpoint), args.dtype).eval()
    model.set_attn_implementation("sdpa")
    cfg = model.config
    L, d, inter = model.num_layers, cfg.hidden_size, cfg.intermediate_size
    layer = model.gated_layers[0]
    weight_bytes = sum(t.numel() * t.element_size() for t in layer.base_layer.parameters())
    print(f"{args.checkpoint}: {L} layers x {d} hidden, {device_name('cpu')}, {weights_dtype(model)}")
    print(f"one layer's weights: {weight_bytes / 1e6:.1f} MB")
    # per sequence: layer, floor, full; per batch: a gate's decision, after a layer and in a tight loop
    header = (
        "task   batch tokens  layer ms  GFLOP/s   GB/s  floor ms  full ms  floor %  gate us  gate us (tight)"
    )
    print(header + "\n" + "-" * len(header))
    for task in args.tasks.split(","):
        data = encode(load_split(get_task(task), "dev", args.data_dir), model.tokenizer, 128)
        data = data.subset(np.arange(min(args.rows, len(data))))
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            batches = [collate(data, idx, "cpu") for idx in batch_indices(data.lengths, bs, shuffle=False)]
            for b in batches:
                b.pop("labels")
            n = len(data)
            tokens = float(np.mean([int(b["attention_mask"].shape[1]) for b in batches]))  # padded width
            none = torch.zeros(1, L, dtype=torch.bool)

            def full(batches=batches):
                for b in batches:
                    model(**b, open_gates=True)

            def floor(batches=batches, none=none):
                for b in batches:
                    model(**b, forced_gates=none.expand(b["input_ids"].shape[0], -1))

            full()
            t_full = median_us(full, args.repeats) / n
            t_floor = median_us(floor, args.repeats) / n
            t_layer = (t_full - t_floor) / L
            tight, in_situ = gate_cost(layer, bs, int(tokens), model.threshold, args.repeats)
            flops = layer_flops(d, inter, tokens)
            print(
                f"{task:6s} {bs:5d} {tokens:6.1f} {t_layer / 1e3:9.3f} {flops / t_layer / 1e3:8.1f} "
                f"{weight_bytes / bs / t_layer / 1e3:6.1f} {t_floor / 1e3:9.3f} {t_full / 1e3:8.3f} "
                f"{100 * t_floor / t_full:8.1f} {in_situ:8.1f} {tight:16.1f}"
            )


if __name__ == "__main__":
    main()
