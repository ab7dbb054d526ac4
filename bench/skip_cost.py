"""What skipping each layer costs a fine-tuned model, measured: the ground truth a skip gate's gradient
estimator should agree with.

For a model (a stage I cache folder or any saved HF classifier; a saved HadSkip model runs with its gates
open) and a task, every route that drops one layer for every row, and the truncations to the first k layers,
are run with the gates forced: mean task loss on a seeded slice of training rows and the dev metric.

    python bench/skip_cost.py MODEL_DIR --task mrpc [--data-dir ../shared/data/glue] [--rows 640]

On MiniLM-L6 fine-tuned on MRPC (stage I, seed 1) dropping layer 2 takes dev F1 from 0.845 to 0.120 and
dropping layer 4 to 0.843, while ReinMax-trained gates dropped layer 2 first (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hadskip.cli.commands import quiet_transformers
from hadskip.core import losses
from hadskip.core.model import GatedModel
from hadskip.data.encoding import Encoded, batch_indices, encode, iterate
from hadskip.data.metrics import predictions, task_metrics
from hadskip.data.tasks import get_task, load_split
from hadskip.tables import Column, text_table


def load_model(path: str) -> GatedModel:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hadskip.checkpoint import load
    from hadskip.core.model import GATES_FILE

    if (Path(path) / GATES_FILE).exists():
        return load(path).eval()
    model = GatedModel(AutoModelForSequenceClassification.from_pretrained(path)).eval()
    model.tokenizer = AutoTokenizer.from_pretrained(path)
    return model


@torch.no_grad()
def run_route(model: GatedModel, data: Encoded, route: list[bool]) -> tuple[float, np.ndarray]:
    """Mean task loss and the logits of every row of `data` (in its order) with the layers of `route` on."""
    total, rows, logits = 0.0, [], []
    for idx, batch in iterate(data, batch_indices(data.lengths, 64, shuffle=False), torch.device("cpu")):
        labels = batch.pop("labels")
        out = model(**batch, forced_gates=torch.tensor(route).expand(len(idx), -1))
        total += float(losses.per_row_task_loss(out.logits, labels).sum())
        rows.append(idx)
        logits.append(out.logits.float().numpy())
    order = np.argsort(np.concatenate(rows))  # batches group rows of similar length
    return total / len(data), np.concatenate(logits)[order]


def routes(num_layers: int) -> list[tuple[str, list[bool]]]:
    every = [("all layers", [True] * num_layers)]
    drop_one = [(f"without {i + 1}", [j != i for j in range(num_layers)]) for i in range(num_layers)]
    first_k = [(f"first {k}", [j < k for j in range(num_layers)]) for k in range(num_layers - 1, 0, -1)]
    return every + drop_one + first_k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--task", required=True)
    p.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
    )
    p.add_argument("--rows", type=int, default=640, help="training rows the loss is measured on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    quiet_transformers()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    model = load_model(args.model)
    train = encode(load_split(task, "train", args.data_dir), model.tokenizer, 128).sample(
        args.rows, args.seed
    )
    dev = encode(load_split(task, "dev", args.data_dir), model.tokenizer, 128)
    rows = []
    for name, route in routes(model.num_layers):
        loss, _ = run_route(model, train, route)
        _, logits = run_route(model, dev, route)
        metric = task_metrics(task, predictions(task, logits), dev.labels)[task.metric]
        rows.append({"route": name, "layers": sum(route), "train_loss": loss, "dev": metric})
    columns = [
        Column("route", align="<"),
        Column("layers"),
        Column("train_loss", f"train loss ({len(train)} rows)", ".3f"),
        Column("dev", f"dev {task.metric}", ".4f"),
    ]
    print(text_table(rows, columns))


if __name__ == "__main__":
    main()
