"""Serve each saved point of a HadSkip run at every budget of the run: does one trained model stretch to the
others, or does each budget need its own point of the homotopic path?

Every checkpoint under RUN/checkpoints/budget-* gets its threshold on p(run) calibrated again for each budget,
exactly as training calibrates it (the run's calibration rows, seed and row count), and is evaluated on dev.
The diagonal reproduces the run's own results rows.

    python bench/cross_budget.py RUN [--budgets 4.5,3,1.5] [--threads 1]

RUN is a `hadskip train` output folder, or one run below `bench/methods.py --checkpoints --out DIR`
(DIR/TASK/LABEL-sSEED). On MiniLM-L6 / SST-2 (4,000 rows, seed 1, today's defaults) no model served off its
budget beat the model trained for it, and most lost badly (bench/RESULTS.md, "one model served at another
budget").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hadskip.checkpoint import load
from hadskip.core.inference import calibrate_threshold
from hadskip.core.runtime import Runtime
from hadskip.run.curve import checkpoint_settings
from hadskip.run.task_data import evaluate, load_task_data
from hadskip.tables import Column, text_table


def points(run: Path) -> list[tuple[float, Path]]:
    """The run's budget checkpoints, highest budget first."""
    found = [(float(p.name.split("-", 1)[1]), p) for p in run.glob("checkpoints/budget-*") if p.is_dir()]
    if not found:
        raise SystemExit(f"no checkpoints/budget-* below {run} (train with checkpoints kept)")
    return sorted(found, reverse=True)


def cross_rows(run: Path, budgets: list[float] | None = None, runtime: Runtime | None = None) -> list[dict]:
    """One row per (trained budget, served budget): dev metric and mean layers at the threshold calibrated
    for the served budget on the run's own calibration rows."""
    runtime = runtime or Runtime()
    saved = points(run)
    first = saved[0][1]
    settings = checkpoint_settings(first, _run_task(first), "hadskip")
    data = load_task_data(settings, str(first))
    serve = budgets or settings.budgets
    rows = []
    for trained, path in saved:
        model = load(path).to(runtime.device)
        for budget in serve:
            threshold, _ = calibrate_threshold(
                model,
                data.calibration,
                budget,
                runtime,
                rows=settings.stage3.calibration_rows,
                batch_size=settings.eval_batch_size,
                seed=settings.training_seed,
            )
            ev = evaluate(model, data, runtime, settings.eval_batch_size, threshold=threshold)
            rows.append(
                {
                    "trained": trained,
                    "served": budget,
                    "threshold": threshold,
                    "layers": ev.stats["mean_layers"],
                    "metric_name": data.task.metric,
                    "metric": ev.metric,
                }
            )
    return rows


def _run_task(checkpoint: Path) -> str:
    config = checkpoint.parent.parent / "config.json"
    try:
        return json.loads(config.read_text())["data"]["task"]
    except (OSError, KeyError, ValueError) as err:
        raise SystemExit(f"cannot read the run's task from {config}: {err}") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--budgets", default=None, help="comma list (default: the run's budgets)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else None
    rows = cross_rows(args.run, budgets)
    table = [
        {
            "trained for": f"{r['trained']:g}",
            "served at": f"{r['served']:g}",
            "threshold": f"{r['threshold']:.4f}",
            "layers": f"{r['layers']:.2f}",
            r["metric_name"]: f"{r['metric']:.4f}",
        }
        for r in rows
    ]
    print(text_table(table, [Column(k) for k in table[0]]))


if __name__ == "__main__":
    main()
