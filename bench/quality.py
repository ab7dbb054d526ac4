"""Quality benchmark: HadSkip against the full model and static truncation, at the same budgets.

For each task it runs `hadskip train` (stage I gives the full model's row) and, per budget, fine-tunes the
model cut to its first ceil(budget) layers with the stage I recipe (the static "budgeted exit" baseline),
then prints one table: dev metric, mean executed layers, retention (raw, and of the gain over the
majority-class score), and wall times.

    python bench/quality.py --tasks cola,mrpc,sst2 --budgets 4.5,3,1.5 --sst2-train-limit 20000

Goals (the paper's retention on BERT-base): >= 99% / 96% / 89% of the full model's metric at
3/4 / 1/2 / 1/4 of the layers, mean layers within +-0.25 of each budget, and better than truncation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from hadskip.arch import architecture_for, layer_list
from hadskip.config import build_settings
from hadskip.model import GatedModel
from hadskip.pipeline import (
    Runtime,
    _load_hf,
    evaluate,
    load_task_data,
    pick_device,
    resolve_model_source,
    seed_everything,
    train_run,
)
from hadskip.results import read_results
from hadskip.train import Stage, fit

log = logging.getLogger("bench.quality")
GOALS = {0.75: 0.99, 0.5: 0.96, 0.25: 0.89}  # budget fraction -> retention goal


def truncation_baseline(settings, k: int, runtime: Runtime) -> tuple[float, float]:
    """Fine-tune the first k layers with the stage I recipe; (dev metric, seconds)."""
    source = resolve_model_source(settings.model.name_or_path)
    data = load_task_data(settings, source)
    seed_everything(settings.seed)
    hf = _load_hf(source, data.task, settings)
    layers = layer_list(hf, architecture_for(hf))
    del layers[k:]
    hf.config.num_hidden_layers = k
    model = GatedModel(hf).to(runtime.device)
    start = time.perf_counter()
    fit(model, Stage("stage1", settings.stage1, trains="backbone", label=f"truncated to {k}"), data.train,
        runtime, seed=settings.seed)  # fmt: skip
    seconds = time.perf_counter() - start
    return evaluate(model, data, runtime, settings.eval_batch_size, open_gates=True).metric, seconds


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
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    budgets = [float(b) for b in args.budgets.split(",")]
    table = []
    for task in args.tasks.split(","):
        overrides = [f"data.task={task}", f"data.data_dir={json.dumps(args.data_dir)}",
                     f"model.name_or_path={json.dumps(args.model)}", f"budgets={json.dumps(budgets)}",
                     *args.overrides]  # fmt: skip
        if task.startswith("sst"):
            overrides.append(f"data.train_limit={args.sst2_train_limit}")
        settings = build_settings({}, overrides)
        runtime = Runtime(device=pick_device(settings.device))
        out = Path(args.out) / task
        start = time.perf_counter()
        train_run(
            settings,
            str(out),
            runtime=runtime,
            cache_dir=args.cache_dir,
            resume=(out / "state.json").exists(),
        )
        wall = time.perf_counter() - start
        df = read_results(out / "results.parquet")
        full = df[df.method == "full"].iloc[0]
        for _, row in df[df.method == "hadskip"].iterrows():
            trunc, trunc_s = (float("nan"), float("nan"))
            if not args.no_truncation:
                trunc, trunc_s = truncation_baseline(settings, math.ceil(row.budget), runtime)
            table.append(dict(task=task, metric_name=row.metric_name, full=full.metric, majority=full.majority_metric,
                              budget=row.budget, L=int(row.num_layers), hadskip=row.metric,
                              mean_layers=row.mean_layers, trunc=trunc, trunc_s=trunc_s,
                              stage1_s=full.train_seconds, hadskip_s=row.train_seconds, wall_s=wall))  # fmt: skip
        print_table(table)
    (Path(args.out) / "quality.json").write_text(json.dumps(table, indent=2))


def print_table(table: list[dict]) -> None:
    head = (f"{'task':<6} {'metric':<8} {'full':>7} {'budget':>6} {'hadskip':>8} {'layers':>6} {'retain':>7} "
            f"{'gain-ret':>8} {'goal':>5} {'trunc':>7} {'beats':>5} {'stageI s':>8} {'stIII s':>8} {'trunc s':>7}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in table:
        retain = r["hadskip"] / r["full"] if r["full"] else float("nan")
        gain = r["full"] - r["majority"]
        gain_ret = (r["hadskip"] - r["majority"]) / gain if gain > 0 else float("nan")
        goal = GOALS.get(round(r["budget"] / r["L"], 2), float("nan"))
        beats = "yes" if r["hadskip"] > r["trunc"] else ("-" if math.isnan(r["trunc"]) else "no")
        print(f"{r['task']:<6} {r['metric_name']:<8} {r['full']:>7.4f} {r['budget']:>6g} {r['hadskip']:>8.4f} "
              f"{r['mean_layers']:>6.2f} {retain:>7.1%} {gain_ret:>8.1%} {goal:>5.0%} {r['trunc']:>7.4f} {beats:>5} "
              f"{r['stage1_s']:>8.0f} {r['hadskip_s']:>8.0f} {r['trunc_s']:>7.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
