"""Quality benchmark: HadSkip against the full model and static truncation, at the same budgets, with the
paper's retention goals.

For each task it runs `train_run` for HadSkip and for the `static` baseline (the first floor(budget) layers
and the model's own head, fine-tuned from the same stage I model; `hadskip.baselines.static`), then prints
one table: dev metric, mean executed layers, retention (raw, and of the gain over the majority-class score)
against the paper's goals, and whether HadSkip beats truncation.

    python bench/quality.py --tasks cola,mrpc,sst2 --budgets 4.5,3,1.5 --sst2-train-limit 20000

Goals (the paper's retention on BERT-base): >= 99% / 96% / 89% of the full model's metric at
3/4 / 1/2 / 1/4 of the layers, mean layers within +-0.25 of each budget, and better than truncation.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from hadskip.cli.commands import quiet_transformers
from hadskip.config import build_settings
from hadskip.core.runtime import Runtime, pick_device
from hadskip.results import read_results
from hadskip.run.train import train_run
from hadskip.tables import Column, text_table

GOALS = {0.75: 0.99, 0.5: 0.96, 0.25: 0.89}  # budget fraction -> retention goal


def run_method(task: str, method: str, args, budgets: list[float]):
    overrides = [
        f"data.task={task}",
        f"data.data_dir={json.dumps(args.data_dir)}",
        f"model.name_or_path={json.dumps(args.model)}",
        f"budgets={json.dumps(budgets)}",
        f"method={method}",
        *args.overrides,
    ]
    if task.startswith("sst"):
        overrides.append(f"data.train_limit={args.sst2_train_limit}")
    settings = build_settings({}, overrides)
    out = Path(args.out) / task / method
    start = time.perf_counter()
    train_run(
        settings,
        str(out),
        runtime=Runtime(device=pick_device(settings.device)),
        cache_dir=args.cache_dir,
        resume=(out / "state.json").exists(),
    )
    return read_results(out / "results.parquet"), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="cola,mrpc,sst2")
    p.add_argument("--budgets", default="4.5,3,1.5")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
    )
    p.add_argument("--out", default="bench-results/quality")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--sst2-train-limit", type=int, default=20000, help="SST-2 train rows (67k in full)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], help="extra settings for every run"
    )
    p.add_argument("--no-truncation", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_transformers()

    budgets = [float(b) for b in args.budgets.split(",")]
    table = []
    for task in args.tasks.split(","):
        df, wall = run_method(task, "hadskip", args, budgets)
        static = None if args.no_truncation else run_method(task, "static", args, budgets)[0]
        full = df[df.method == "full"].iloc[0]
        for row in df[df.method == "hadskip"].itertuples():
            trunc = float("nan")
            if static is not None:
                trunc = float(
                    static[(static.method == "static") & (static.budget == row.budget)].metric.iloc[0]
                )
            gain = full.metric - full.majority_metric
            table.append(
                {
                    "task": task,
                    "metric": row.metric_name,
                    "full": full.metric,
                    "budget": row.budget,
                    "hadskip": row.metric,
                    "layers": row.mean_layers,
                    "retain": row.metric / full.metric if full.metric else float("nan"),
                    "gain-ret": (row.metric - full.majority_metric) / gain if gain > 0 else float("nan"),
                    "goal": GOALS.get(round(row.budget / row.num_layers, 2), float("nan")),
                    "trunc": trunc,
                    "beats": "-" if trunc != trunc else ("yes" if row.metric > trunc else "no"),
                    "stage I s": full.train_seconds,
                    "HadSkip s": row.train_seconds,
                    "wall s": wall,
                }
            )
        print(format_table(table), flush=True)
    (Path(args.out) / "quality.json").write_text(json.dumps(table, indent=2))


def format_table(table: list[dict]) -> str:
    pct = {"retain", "gain-ret", "goal"}
    four = {"full", "hadskip", "trunc"}
    secs = {"stage I s", "HadSkip s", "wall s"}
    columns = [Column("task", align="<"), Column("metric", align="<")]
    for key in ["full", "budget", "hadskip", "layers", "retain", "gain-ret", "goal", "trunc", "beats", *secs]:
        fmt = (
            ".1%"
            if key in pct
            else ".4f"
            if key in four
            else ".0f"
            if key in secs
            else ".2f"
            if key == "layers"
            else ""
        )
        columns.append(Column(key, fmt=fmt if key != "budget" else "g"))
    return text_table(table, columns)


if __name__ == "__main__":
    main()
