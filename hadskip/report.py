"""`hadskip results`: the best-point table, SQL over the results, and a Markdown report with plots.

Every function reads the same thing: a results file (`hadskip train`) or a results dataset folder (the sweep),
local or on an object store, through `hadskip.results.read_results`, which sees only complete files, so all of
this works while a sweep is still writing. The functions return DataFrames for notebooks; the CLI prints them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import pandas as pd

from hadskip.cli import command
from hadskip.errors import ConfigError
from hadskip.results import ResultsError, best_points, read_results, read_table

log = logging.getLogger(__name__)

HYPERPARAMETERS = ["lr", "batch_size", "beta", "alpha_pred", "alpha_hidden", "alpha_attn", "alpha_emb"]
# searched by the early-exit baselines' studies and found only in a row's settings JSON
SETTINGS_HYPERPARAMETERS = ["exits.head_lr", "exits.weight_lr", "exits.cycle"]
CATEGORICAL = {"batch_size", "exits.cycle"}


def _setting(settings: object, key: str) -> float:
    """A numeric setting from a row's settings JSON (NaN when the row has none)."""
    node = json.loads(settings) if isinstance(settings, str) and settings else {}
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return float(node) if isinstance(node, int | float) else math.nan


# -- summary ---------------------------------------------------------------------------------------------


def summary(path_or_df, *, tolerance: float = 0.25, retention: bool = False, sweep_id: str | None = None):
    """The paper's Table 1 shape: one row per (method, budget), one column per task plus AVG.

    Each cell is the best valid point's dev metric (valid: status ok and mean layers <= budget + tolerance);
    `retention=True` gives it as a fraction of the task's full model instead. Returns (table, details):
    `details` has, per task, method and budget, the chosen point, its mean layers and the number of points
    excluded (failed, stopped, over budget).
    """
    df = read_results(path_or_df) if not isinstance(path_or_df, pd.DataFrame) else path_or_df
    best = best_points(df, sweep_id, tolerance)
    if best.empty:
        raise ResultsError("no points to summarise")
    best = best.assign(value=best.metric.where(best.found))
    if retention:
        full = best[best.method == "full"].set_index("task").metric
        best["value"] = best.value / best.task.map(full)
    table = best.pivot_table(index=["method", "budget"], columns="task", values="value", aggfunc="first")
    table["AVG"] = table.mean(axis=1, skipna=False)
    order = sorted(table.index, key=lambda mb: (mb[0] != "full", mb[0], -mb[1]))
    return table.loc[order], best


def format_summary(table: pd.DataFrame, details: pd.DataFrame, *, retention: bool = False) -> str:
    layers = details.set_index(["method", "budget", "task"]).mean_layers
    tasks = [c for c in table.columns if c != "AVG"]
    width = 16
    head = f"{'method':<8} {'budget':>6}  " + "".join(f"{t:>{width}}" for t in tasks) + f"{'AVG':>9}"
    lines = [head, "-" * len(head)]
    for (method, budget), row in table.iterrows():
        cells = []
        for t in tasks:
            v = row[t]
            if pd.isna(v):
                cells.append(f"{'-':>{width}}")
                continue
            shown = f"{v:.1%}" if retention else f"{100 * v:.1f}"
            cells.append(f"{shown + f' ({layers.get((method, budget, t), math.nan):.2f})':>{width}}")
        avg = row["AVG"]
        avg_s = "-" if pd.isna(avg) else (f"{avg:.1%}" if retention else f"{100 * avg:.1f}")
        lines.append(f"{method:<8} {budget:>6g}  " + "".join(cells) + f"{avg_s:>9}")
    excluded = int(details[details.method != "full"].n_invalid.sum())
    metric_names = details.drop_duplicates("task").set_index("task").metric_name
    lines.append(
        ("cells: best dev metric as % of the full model" if retention else "cells: best dev metric x100")
        + " (mean executed layers); "
        + ", ".join(f"{t}: {metric_names[t]}" for t in tasks)
        + f"; {excluded} points excluded (failed, stopped or over budget)"
    )
    return "\n".join(lines)


# -- query -----------------------------------------------------------------------------------------------


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run DuckDB SQL over the results, registered as the table `results`."""
    import duckdb

    table = read_table(path)
    con = duckdb.connect()
    try:
        con.register("results", table)
        return con.execute(sql).df()
    except duckdb.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResultsError(f"SQL error: {first}") from None
    finally:
        con.close()


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", default_handler=str)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        return df.to_string(index=False)


# -- hyperparameter importance ---------------------------------------------------------------------------


def importances(df: pd.DataFrame, *, tolerance: float = 0.25, min_trials: int = 3) -> dict[str, dict]:
    """Per study: each hyperparameter's importance for the trial objective (the mean over budgets of the
    metric, an invalid point counting -1, as the sweep optimised it), from the result rows alone.

    The study is rebuilt in memory from the rows (Optuna's own storage need not be reachable) and scored with
    Optuna's PED-ANOVA evaluator. Studies with fewer than `min_trials` trials are skipped.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    points = df[(df.method != "full") & df.study.notna() & df.trial_id.notna()].copy()
    if points.empty:
        return {}
    points["score"] = points.metric.where(
        (points.status == "ok") & (points.mean_layers <= points.budget + tolerance), -1.0
    )
    for key in SETTINGS_HYPERPARAMETERS:
        points[key] = [_setting(js, key) for js in points.settings]
    names = HYPERPARAMETERS + SETTINGS_HYPERPARAMETERS
    out: dict[str, dict] = {}
    for study_name, rows in points.groupby("study"):
        trials = rows.groupby("trial_id").agg({"score": "mean", **{h: "first" for h in names}})
        varied = [h for h in names if trials[h].nunique() > 1]
        if len(trials) < min_trials or not varied:
            continue
        dists = {}
        for h in varied:
            values = trials[h].astype(float)
            if h in CATEGORICAL:
                dists[h] = CategoricalDistribution(sorted({int(v) for v in values}))
            else:
                dists[h] = FloatDistribution(float(values.min()), float(values.max()), log=values.min() > 0)
        study = optuna.create_study(direction="maximize")
        for _, t in trials.iterrows():
            params = {h: (int(t[h]) if h in CATEGORICAL else float(t[h])) for h in varied}
            study.add_trial(
                optuna.trial.create_trial(params=params, distributions=dists, value=float(t.score))
            )
        try:
            scores = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
        except Exception as err:  # noqa: BLE001 - too few distinct values, degenerate objectives
            log.warning("importance of study %s not computed: %s", study_name, err)
            continue
        out[str(study_name)] = {"trials": len(trials), "importance": dict(scores)}
    return out


# -- report ----------------------------------------------------------------------------------------------


def report(path: str | Path, out: str | Path, *, tolerance: float = 0.25) -> Path:
    """Write `report.md` and its PNG figures into `out`; returns the Markdown file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = read_results(path)
    table, best = summary(df, tolerance=tolerance)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# HadSkip results: {path}", "", f"{len(df)} points, tasks: {', '.join(sorted(df.task.unique()))}; "
          f"valid points: status ok and mean executed layers <= budget + {tolerance:g}.", "",
          "## Best point per task and budget", "", "```", format_summary(table, best), "```", ""]  # fmt: skip

    for task in sorted(df.task.unique()):
        rows = df[df.task == task]
        tb = best[best.task == task]
        metric_name = rows.metric_name.iloc[0]
        md += [f"## {task}", ""]

        # metric against budget (paper Fig. 6): one line per method, the full model as a reference
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, g in tb[(tb.method != "full") & tb.found].groupby("method"):
            g = g.sort_values("budget")
            ax.plot(g.budget, g.metric, marker="o", label=method)
        full = tb[tb.method == "full"]
        if len(full):
            ax.axhline(full.metric.iloc[0], color="gray", linestyle="--", label="full model")
        ax.set(
            xlabel="budget (expected executed layers)",
            ylabel=f"dev {metric_name}",
            title=f"{task}: metric vs budget",
        )
        ax.legend()
        fig.tight_layout()
        md += _save(fig, out / f"{task}-metric-vs-budget.png", "metric against budget")

        ok = tb[(tb.method != "full") & tb.found & tb.layer_usage.notna()].sort_values(
            "budget", ascending=False
        )
        if len(ok):
            # per-layer usage at each budget (paper Figs. 2-4)
            usage = pd.DataFrame(
                [list(u) for u in ok.layer_usage], index=[f"{m} {b:g}" for m, b in zip(ok.method, ok.budget)]
            )
            fig, ax = plt.subplots(figsize=(1 + 0.6 * usage.shape[1], 0.8 + 0.45 * len(usage)))
            im = ax.imshow(usage.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(usage.shape[1]), [str(i + 1) for i in range(usage.shape[1])])
            ax.set_yticks(range(len(usage)), usage.index)
            ax.set(xlabel="layer", title=f"{task}: fraction of dev sequences running each layer")
            for (i, j), v in pd.DataFrame(usage.to_numpy(float)).stack().items():
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    color="white" if v < 0.6 else "black",
                    fontsize=8,
                )
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            md += _save(fig, out / f"{task}-layer-usage.png", "layer usage")

            # distribution of executed layers (paper Fig. 5)
            fig, ax = plt.subplots(figsize=(6, 4))
            width = 0.8 / len(ok)
            for k, (label, hist) in enumerate(zip(usage.index, ok.layers_hist)):
                hist = list(hist)
                total = max(sum(hist), 1)
                ax.bar(
                    [i + k * width for i in range(len(hist))],
                    [h / total for h in hist],
                    width=width,
                    label=label,
                )
            ax.set(
                xlabel="executed layers",
                ylabel="fraction of dev sequences",
                title=f"{task}: layers used per input",
            )
            ax.legend()
            fig.tight_layout()
            md += _save(fig, out / f"{task}-layers-hist.png", "distribution of layers used")

        # Pareto front of metric against mean layers over every ok point
        pts = rows[(rows.status == "ok") & rows.metric.notna() & rows.mean_layers.notna()]
        if len(pts):
            fig, ax = plt.subplots(figsize=(6, 4))
            for method, g in pts.groupby("method"):
                ax.scatter(g.mean_layers, g.metric, s=18, alpha=0.6, label=method)
            front = pareto_front(pts)
            ax.plot(
                front.mean_layers, front.metric, color="black", drawstyle="steps-post", label="Pareto front"
            )
            ax.set(
                xlabel="mean executed layers (dev)", ylabel=f"dev {metric_name}", title=f"{task}: every point"
            )
            ax.legend()
            fig.tight_layout()
            md += _save(fig, out / f"{task}-pareto.png", "Pareto front")

    imp = importances(df, tolerance=tolerance)
    md += ["## Hyperparameter importance (PED-ANOVA, per Optuna study)", ""]
    if not imp:
        md += ["No study has enough trials (3) with varied hyperparameters.", ""]
    for study_name, info in imp.items():
        names = list(info["importance"])
        fig, ax = plt.subplots(figsize=(6, 0.8 + 0.4 * len(names)))
        ax.barh(names[::-1], [info["importance"][n] for n in names[::-1]])
        ax.set(xlabel="importance", title=f"{study_name} ({info['trials']} trials)")
        fig.tight_layout()
        md += _save(fig, out / f"importance-{study_name}.png", f"importance, {study_name}")
    target = out / "report.md"
    target.write_text("\n".join(md) + "\n")
    return target


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on both fewer mean layers and a higher metric, by mean layers."""
    pts = points.sort_values(["mean_layers", "metric"], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, row in pts.iterrows():
        if row.metric > best:
            keep.append(idx)
            best = row.metric
    return pts.loc[keep]


def _save(fig, path: Path, alt: str) -> list[str]:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [f"![{alt}]({path.name})", ""]


# -- CLI -------------------------------------------------------------------------------------------------


def _results_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="results_command", required=True)
    s = sub.add_parser("summary", help="best point per task and budget (the paper's Table 1)")
    s.add_argument("path", help="results file or folder (local or URI)")
    s.add_argument("--tolerance", type=float, default=0.25, help="valid: mean layers <= budget + this")
    s.add_argument("--retention", action="store_true", help="cells as a fraction of the full model")
    s.add_argument("--sweep", help="only this sweep_id")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q = sub.add_parser("query", help="SQL (DuckDB) over the results as table `results`")
    q.add_argument("path")
    q.add_argument("sql")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    r = sub.add_parser("report", help="Markdown report with PNG plots")
    r.add_argument("path")
    r.add_argument("--out", required=True, help="folder for report.md and the PNGs")
    r.add_argument("--tolerance", type=float, default=0.25)


@command("results", "summarise, query and report results (Parquet)")(_results_args)
def _results(args: argparse.Namespace) -> int:
    if getattr(args, "tolerance", 0) < 0:
        raise ConfigError(f"--tolerance {args.tolerance} must be >= 0 (layers over the budget allowed)")
    if args.results_command == "summary":
        table, details = summary(
            args.path, tolerance=args.tolerance, retention=args.retention, sweep_id=args.sweep
        )
        if args.format == "table":
            print(format_summary(table, details, retention=args.retention))
        else:
            print(render(table.reset_index(), args.format))
    elif args.results_command == "query":
        print(render(query(args.path, args.sql), args.format))
    else:
        target = report(args.path, args.out, tolerance=args.tolerance)
        print(f"report: {target}")
    return 0


__all__ = ["summary", "format_summary", "query", "report", "importances", "pareto_front", "render"]
