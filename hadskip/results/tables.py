"""The tables a reader looks at first: the best valid point per task, method and budget, and the paper's
Table 1 shape (a row per method and budget, a column per task)."""

from __future__ import annotations

import math

import pandas as pd

from hadskip.results.io import read_results
from hadskip.results.schema import ResultsError


def best_points(df, sweep_id: str | None = None, tolerance: float = 0.25):
    """Per task and budget, the best valid point (status ok, mean layers <= budget + tolerance), plus the
    full model's row; with `n_points` (all points) and `n_invalid` (failed, stopped or over budget)."""
    import pandas as pd

    if sweep_id is not None:
        df = df[df.sweep_id == sweep_id]
    df = df.copy()
    df["valid"] = (df.status == "ok") & ((df.method == "full") | (df.mean_layers <= df.budget + tolerance))
    out = []
    for _, group in df.groupby(["task", "method", "budget"], sort=True):
        valid = group[group.valid]
        best = valid.loc[valid.metric.idxmax()] if len(valid) else group.iloc[0]
        rec = best.to_dict()
        rec.update(n_points=len(group), n_invalid=int((~group.valid).sum()), found=bool(len(valid)))
        out.append(rec)
    cols = [
        "task",
        "method",
        "budget",
        "metric_name",
        "metric",
        "mean_layers",
        "trial_id",
        "lr",
        "batch_size",
        "beta",
        "alpha_pred",
        "alpha_hidden",
        "alpha_attn",
        "alpha_emb",
        "n_points",
        "n_invalid",
        "found",
        "checkpoint",
        "num_layers",
        "layer_usage",
        "layers_hist",
        "sweep_id",
        "study",
    ]
    table = pd.DataFrame(out, columns=cols) if out else pd.DataFrame(columns=cols)
    return table.sort_values(["task", "budget"], ascending=[True, False]).reset_index(drop=True)


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


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", default_handler=str)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        return df.to_string(index=False)
