"""Skipping against exiting: HadSkip (and variants of it) and the early-exit baselines at the same budgets,
over several seeds, in one table.

Every run goes through `train_run` (the same stage I fine-tune per seed, shared through the cache, the same
data, metrics and budgets). Per task, method and budget the table shows the dev metric as mean ± std over
the seeds, the mean executed layers on dev, the share of the full model's gain over the majority class
((metric - majority) / (full - majority), per seed), and HadSkip's lead over the best valid baseline, called
a win or a loss only when it exceeds the seeds' spread (sqrt(sd_a^2 + sd_b^2)); otherwise a tie.

Every method of one seed starts from the same stage I model and data, so most of the seed-to-seed spread is
shared; `paired` compares per seed instead: the mean ± std of the per-seed differences (HadSkip minus the
best baseline, a variant minus `hadskip` or minus the row named by `--reference`, e.g. 'hadskip[reinforce]'),
a win or a loss where a two-sided paired t-test gives p < 0.05.

    python bench/methods.py --tasks cola,mrpc,sst2 --seeds 1,2,3 --set-for sst2:data.train_limit=8000
    python bench/methods.py --tasks sst2 --methods hadskip,static --seeds 1,2 \\
        --variant reinmax=gates.estimator=reinmax,stage3.budget_target=sampled      # an ablation row

Seeds run in parallel as separate processes (one per core, each with its own --out and a shared
--cache-dir) make one table afterwards, without training anything:

    python bench/methods.py --table runs/s1 runs/s2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from hadskip.cli.commands import quiet_transformers
from hadskip.config import build_settings
from hadskip.core.runtime import Runtime, pick_device
from hadskip.registry import METHOD_NAMES
from hadskip.results import read_results
from hadskip.run.train import train_run
from hadskip.tables import Column, text_table

log = logging.getLogger("bench.methods")


def runs(args) -> list[tuple[str, str, list[str]]]:
    """(label, method, extra settings): every method, then each HadSkip variant (`--methods ''`: variants only)."""
    out = [(m, m, []) for m in args.methods.split(",") if m]
    for spec in args.variant:
        name, _, sets = spec.partition("=")
        out.append((f"hadskip[{name}]", "hadskip", [s for s in sets.split(",") if s]))
    return out


def run(args) -> pd.DataFrame:
    budgets = [float(b) for b in args.budgets.split(",")]
    per_task = {}
    for spec in args.set_for:
        task, _, setting = spec.partition(":")
        per_task.setdefault(task, []).append(setting)
    frames = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for task in args.tasks.split(","):
            for label, method, extra in runs(args):
                overrides = [
                    f"data.task={task}",
                    f"data.data_dir={json.dumps(args.data_dir)}",
                    f"model.name_or_path={json.dumps(args.model)}",
                    f"budgets={json.dumps(budgets)}",
                    f"method={method}",
                    f"seed={seed}",
                    *args.overrides,
                    *per_task.get(task, []),
                    *extra,
                ]
                settings = build_settings({}, overrides)
                out = Path(args.out) / task / f"{label}-s{seed}"
                train_run(
                    settings,
                    str(out),
                    runtime=Runtime(device=pick_device(settings.device), progress=args.progress),
                    cache_dir=args.cache_dir or str(Path(args.out) / "cache"),
                    resume=(out / "state.json").exists(),
                    save_checkpoints=args.checkpoints,
                )
                df = read_results(out / "results.parquet")
                df["label"] = df.method.where(df.method == "full", label)
                frames.append(df)
                print(format_table(pd.concat(frames), args.tolerance), flush=True)
    return pd.concat(frames)


def collect(dirs: list[str]) -> pd.DataFrame:
    """Every finished run below `dirs` (<out>/<task>/<label>-s<seed>/results.parquet), labelled as `run` does."""
    frames = []
    for top in dirs:
        for path in sorted(Path(top).glob("*/*-s*/results.parquet")):
            df = read_results(path)
            df["label"] = df.method.where(df.method == "full", path.parent.name.rsplit("-s", 1)[0])
            frames.append(df[df.status == "ok"])
    if not frames:
        raise SystemExit(f"no results.parquet below {', '.join(dirs)}")
    return pd.concat(frames)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (task, label, budget), with the per-seed share of the full model's gain."""
    full = df[df.method == "full"].drop_duplicates(["task", "seed"]).set_index(["task", "seed"])
    df = df.drop_duplicates(["task", "label", "budget", "seed"]).copy()
    key = list(zip(df.task, df.seed, strict=True))
    gain = [full.metric.get(k, math.nan) - full.majority_metric.get(k, math.nan) for k in key]
    df["share"] = [
        (m - full.majority_metric.get(k, math.nan)) / g if g > 0 else math.nan
        for m, k, g in zip(df.metric, key, gain, strict=True)
    ]
    return (
        df.sort_values("seed")
        .groupby(["task", "label", "budget"], sort=False)
        .agg(
            n=("metric", "size"),
            mean=("metric", "mean"),
            sd=("metric", "std"),
            seeds=("metric", lambda m: " / ".join(f"{v:.3f}" for v in m)),
            layers=("mean_layers", "mean"),
            share=("share", "mean"),
            train_s=("train_seconds", "mean"),
        )
        .reset_index()
    )


def paired(a: pd.Series, b: pd.Series, *, alpha: float = 0.05) -> str:
    """`a` minus `b` over the seeds both have (Series indexed by seed): "mean ± std (n) call", the call a win
    or a loss where a two-sided paired t-test rejects "no difference" at `alpha`, otherwise a tie; "" below
    two shared seeds."""
    d = (a - b).dropna()
    if len(d) < 2:
        return ""
    sd = d.std()
    if sd == 0:
        p = 1.0 if d.mean() == 0 else 0.0
    else:
        p = 2 * stats.t.sf(abs(d.mean()) / (sd / math.sqrt(len(d))), len(d) - 1)
    call = "tie" if p >= alpha else ("win" if d.mean() > 0 else "loss")
    return f"{d.mean():+.4f} ± {sd:.4f} ({len(d)}) {call}"


def format_table(df: pd.DataFrame, tolerance: float, reference: str = "hadskip") -> str:
    """The comparison table; `reference` is the HadSkip label every other HadSkip row is paired against
    (where it ran), and itself against the best valid baseline."""
    agg = aggregate(df)
    per_seed = (
        df.drop_duplicates(["task", "label", "budget", "seed"])
        .set_index(["task", "budget", "label", "seed"])["metric"]
        .sort_index()
    )

    def seeds(task, budget, label) -> pd.Series:
        return per_seed.loc[(task, budget, label)]

    records = []
    for (task, budget), g in agg.sort_values(["task", "budget"], ascending=[True, False]).groupby(
        ["task", "budget"], sort=False
    ):
        valid = g[(g.label != "full") & (g.layers <= g.budget + tolerance)]
        baselines = valid[~valid.label.str.startswith("hadskip")]
        best = baselines.loc[baselines["mean"].idxmax()] if len(baselines) else None
        for r in g.itertuples():
            ok = r.label == "full" or r.layers <= r.budget + tolerance
            verdict = by_seed = ""
            if r.label.startswith("hadskip") and best is not None:
                lead = r.mean - best["mean"]
                spread = math.sqrt(sum(x**2 for x in (r.sd, best.sd) if x == x))
                call = "tie" if abs(lead) <= spread or r.n < 2 else ("win" if lead > 0 else "loss")
                verdict = f"{lead:+.4f} {call} vs {best.label}"
            # per seed: a variant against the reference (the ablation's question), the reference against the best
            # baseline
            other = None
            if r.label.startswith("hadskip") and r.label != reference and reference in set(g.label):
                other = reference
            elif r.label.startswith("hadskip") and best is not None:
                other = best.label
            if other:
                by_seed = paired(seeds(task, budget, r.label), seeds(task, budget, other))
                by_seed = f"{by_seed} vs {other}" if by_seed else ""
            sd = f" ± {r.sd:.4f}" if r.sd == r.sd else ""
            records.append(
                {
                    "task": task,
                    "method": r.label,
                    "budget": f"{budget:g}",
                    "n": r.n,
                    "metric": f"{r.mean:.4f}{sd}",
                    "per seed": r.seeds if r.n > 1 else "",
                    "layers": f"{r.layers:.2f}",
                    "ok": "yes" if ok else "NO",
                    "gain share": "-" if r.share != r.share else f"{r.share:.0%}",
                    "vs best baseline": verdict,
                    "paired (per seed)": by_seed,
                    "train s": f"{r.train_s or 0:.0f}",
                }
            )
    left = {"task", "method", "vs best baseline", "paired (per seed)"}
    return text_table(records, [Column(k, align="<" if k in left else ">") for k in records[0]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="cola,mrpc")
    p.add_argument("--budgets", default="4.5,3,1.5")
    p.add_argument("--methods", default=",".join(METHOD_NAMES))
    p.add_argument("--seeds", default="42", help="comma list; each seed its own stage I and runs")
    p.add_argument(
        "--variant", action="append", default=[], help="NAME=KEY=VALUE,KEY=VALUE: a HadSkip ablation row"
    )
    p.add_argument(
        "--set-for", action="append", default=[], metavar="TASK:KEY=VALUE", help="a setting for one task"
    )
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
    p.add_argument(
        "--table", nargs="+", metavar="DIR", help="only print the table of the runs below these --out folders"
    )
    p.add_argument(
        "--reference",
        default="hadskip",
        help="the HadSkip row the others are paired against, e.g. 'hadskip[reinforce]' (default: hadskip)",
    )
    args = p.parse_args()
    if args.table:
        print(format_table(collect(args.table), args.tolerance, args.reference))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_transformers()
    start = time.perf_counter()
    df = run(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    df.drop(columns=["created_at"]).to_json(Path(args.out) / "methods.json", orient="records", indent=1)


if __name__ == "__main__":
    main()
