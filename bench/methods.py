"""Skipping against exiting: HadSkip and the early-exit baselines at the same budgets, in one table.

Every method runs through `hadskip train --method NAME` (the same stage I fine-tune, shared through the
cache, the same data, metrics and budgets) and the table shows, per task, method and budget, the dev metric
and the mean executed layers achieved on dev (thresholds are calibrated on training rows, so a method can
land off its budget; `ok` says whether it stayed within budget + tolerance), and HadSkip's lead over the
best valid baseline at that budget.

    python bench/methods.py --tasks cola,mrpc --budgets 4.5,3,1.5
    python bench/methods.py --tasks mrpc --methods hadskip,pabee --set data.train_limit=512   # quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import pandas as pd

from hadskip.cli.commands import quiet_transformers
from hadskip.config import build_settings
from hadskip.core.runtime import Runtime, pick_device
from hadskip.registry import METHOD_NAMES
from hadskip.results import read_results
from hadskip.run.train import train_run
from hadskip.tables import Column, text_table

log = logging.getLogger("bench.methods")


def run(args) -> pd.DataFrame:
    budgets = [float(b) for b in args.budgets.split(",")]
    frames = []
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            overrides = [
                f"data.task={task}",
                f"data.data_dir={json.dumps(args.data_dir)}",
                f"model.name_or_path={json.dumps(args.model)}",
                f"budgets={json.dumps(budgets)}",
                f"method={method}",
                *args.overrides,
            ]
            settings = build_settings({}, overrides)
            out = Path(args.out) / task / method
            start = time.perf_counter()
            train_run(
                settings,
                str(out),
                runtime=Runtime(device=pick_device(settings.device), progress=args.progress),
                cache_dir=args.cache_dir or str(Path(args.out) / "cache"),
                resume=(out / "state.json").exists(),
                save_checkpoints=args.checkpoints,
            )
            df = read_results(out / "results.parquet").assign(wall_s=time.perf_counter() - start)
            frames.append(df if method == args.methods.split(",")[0] else df[df.method != "full"])
            print(format_table(pd.concat(frames), args.tolerance), flush=True)
    return pd.concat(frames)


def format_table(df: pd.DataFrame, tolerance: float) -> str:
    """Per task and budget every method's dev metric and mean layers; `vs best` = HadSkip minus the best valid
    baseline at that budget."""
    records = []
    for (task, budget), g in df.sort_values(["task", "budget"], ascending=[True, False]).groupby(
        ["task", "budget"], sort=False
    ):
        valid = g[(g.method != "full") & (g.mean_layers <= g.budget + tolerance)]
        baselines = valid[valid.method != "hadskip"]
        best = baselines.metric.max() if len(baselines) else float("nan")
        for r in g.itertuples():
            ok = r.method == "full" or r.mean_layers <= r.budget + tolerance
            lead = r.metric - best if r.method == "hadskip" and best == best else None
            records.append(
                {
                    "task": task,
                    "method": r.method,
                    "budget": f"{budget:g}",
                    "metric": f"{r.metric:.4f}",
                    "layers": f"{r.mean_layers:.2f}",
                    "ok": "yes" if ok else "NO",
                    "vs best": "" if lead is None else f"{lead:+.4f}",
                    "train s": f"{r.train_seconds or 0:.0f}",
                }
            )
    left = {"task", "method"}
    return text_table(records, [Column(k, align="<" if k in left else ">") for k in records[0]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="cola,mrpc")
    p.add_argument("--budgets", default="4.5,3,1.5")
    p.add_argument("--methods", default=",".join(METHOD_NAMES))
    p.add_argument("--model", default="minilm-l6")
    p.add_argument(
        "--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
    )
    p.add_argument("--out", default="bench-results/methods")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--tolerance", type=float, default=0.25)
    p.add_argument("--progress", action="store_true", help="tqdm bars")
    p.add_argument("--checkpoints", action="store_true", help="save each point's model (for bench-speed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="settings for every run")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_transformers()
    start = time.perf_counter()
    df = run(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    df.drop(columns=["created_at"]).to_json(Path(args.out) / "methods.json", orient="records", indent=1)


if __name__ == "__main__":
    main()
