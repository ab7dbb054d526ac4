"""The tables a reader looks at first: the best valid point per task, method and budget, and the paper's
Table 1 shape (a row per method and budget, a column per task)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hadskip.results.io import read_results
from hadskip.results.schema import ResultsError


def best_points(df, sweep_id: str | None = None, tolerance: float = 0.25):
    """Per task and budget, the best valid search point (status ok, mean layers <= budget + tolerance), plus
    the full model's row; with `n_points` (search points) and `n_invalid` (failed, stopped or over budget).
    Confirmation and curve rows never take part in the choice."""
    import pandas as pd

    if sweep_id is not None:
        df = df[df.sweep_id == sweep_id]
    df = df[df.role.fillna("search") == "search"].copy()
    df["valid"] = (df.status == "ok") & ((df.method == "full") | (df.mean_layers <= df.budget + tolerance))
    out = []
    for _, group in df.groupby(["task", "method", "budget"], sort=True):
        valid = group[group.valid]
        best = valid.loc[valid.metric.idxmax()] if len(valid) else group.iloc[0]
        rec = best.to_dict()
        rec.update(
            n_points=len(group),
            n_invalid=int((~group.valid).sum()),
            found=bool(len(valid)),
            n_trials=group.trial_id.nunique() if group.trial_id.notna().any() else len(group),
        )
        out.append(rec)
    cols = [
        "task",
        "method",
        "budget",
        "metric_name",
        "metric",
        "mean_layers",
        "majority_metric",
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
        "n_trials",
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


def with_confirmations(best: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """`best` with, per chosen point, its confirmation seeds: `value` and `layers` become their mean
    (`sd` their spread, `n_seeds` how many finished ok), `shown` says "confirmed"; a point without
    confirmations keeps its search value (`shown` "search-best", `n_seeds` 0)."""
    confirm = df[(df.role == "confirm") & df.confirms.notna()]
    ok = confirm[confirm.status == "ok"]
    stats = ok.groupby(["task", "method", "budget", "confirms"]).agg(
        c_mean=("metric", "mean"),
        c_sd=("metric", "std"),
        c_layers=("mean_layers", "mean"),
        c_n=("metric", "size"),
    )
    out = best.copy()
    keys = list(zip(out.task, out.method, out.budget, out.trial_id, strict=True))
    found = [k in stats.index for k in keys]
    pick = [stats.loc[k] if f else None for k, f in zip(keys, found, strict=True)]
    out["shown"] = ["confirmed" if f else "search-best" for f in found]
    out["n_seeds"] = [int(p.c_n) if p is not None else 0 for p in pick]
    out["sd"] = [float(p.c_sd) if p is not None else math.nan for p in pick]
    out["value"] = [
        float(p.c_mean) if p is not None else (m if f else math.nan)
        for p, m, f in zip(pick, out.metric, out.found, strict=True)
    ]
    out["layers"] = [
        float(p.c_layers) if p is not None else m for p, m in zip(pick, out.mean_layers, strict=True)
    ]
    # seeds asked for but failed: confirmation rows that are not ok
    failed = confirm[confirm.status != "ok"].groupby(["task", "method", "budget", "confirms"]).size()
    out["n_seeds_failed"] = [int(failed.get(k, 0)) for k in keys]
    return out


def skip_scores(best: pd.DataFrame) -> pd.DataFrame:
    """One number per task and method: the mean, over its evaluated budgets, of its metric minus the
    reference curve at the same mean executed layers (ELUE's way of scoring efficient models).

    The reference is this table's own `static` points (truncated models) joined to the majority-class score
    at 0 layers and the full model at L layers, linearly interpolated; with no `static` rows it is the
    straight line from the majority score to the full model. `best` needs `value` and `layers` (as
    `summary` returns them). Columns: task, method, skip_score, budgets, reference.
    """
    records = []
    for task, rows in best.groupby("task", sort=True):
        full = rows[rows.method == "full"]
        if full.empty:
            continue
        L, full_metric = float(full.num_layers.iloc[0]), float(full.value.iloc[0])
        majority = rows.majority_metric.dropna()
        xs, ys = [L], [full_metric]
        if len(majority):
            xs.append(0.0)
            ys.append(float(majority.iloc[0]))
        static = rows[(rows.method == "static") & rows.value.notna() & rows.layers.notna()]
        xs += static.layers.astype(float).tolist()
        ys += static.value.astype(float).tolist()
        reference = "static" if len(static) else "majority-to-full line"
        if len(xs) < 2:  # no majority score and no static rows: no curve to score against
            continue
        order = np.argsort(xs, kind="stable")
        xs, ys = np.asarray(xs)[order], np.asarray(ys)[order]
        for method, g in rows[rows.method != "full"].groupby("method", sort=True):
            g = g[g.value.notna() & g.layers.notna()]
            if g.empty:
                continue
            gaps = g.value.astype(float) - np.interp(g.layers.astype(float), xs, ys)
            records.append(
                {
                    "task": task,
                    "method": method,
                    "skip_score": float(gaps.mean()),
                    "budgets": len(g),
                    "reference": reference,
                }
            )
    return pd.DataFrame(records, columns=["task", "method", "skip_score", "budgets", "reference"])


def summary(
    path_or_df,
    *,
    tolerance: float = 0.25,
    retention: bool = False,
    sweep_id: str | None = None,
    search_best: bool = False,
):
    """The paper's Table 1 shape: one row per (method, budget), one column per task plus AVG.

    Each cell is the best valid search point's configuration (valid: status ok and mean layers <= budget +
    tolerance), shown as the mean over its confirmation seeds where the sweep re-trained it
    (`--confirm-seeds`), else (or with `search_best=True`) as the search trial's own dev metric, the maximum
    over the searched trials. `retention=True` gives cells as a fraction of the task's full model. Returns
    (table, details): `details` has, per task, method and budget, the chosen point, the shown `value`, `sd`,
    `layers`, `n_seeds`, `shown` ("confirmed" or "search-best"), `n_trials` and the excluded points.
    """
    df = read_results(path_or_df) if not isinstance(path_or_df, pd.DataFrame) else path_or_df
    if sweep_id is not None:
        df = df[df.sweep_id == sweep_id]
    best = best_points(df, None, tolerance)
    if best.empty:
        raise ResultsError("no points to summarise")
    best = with_confirmations(best, df.iloc[:0] if search_best else df)
    best["value"] = best.value.where(best.found)
    if retention:
        full = best[best.method == "full"].set_index("task").value
        best["value"] = best.value / best.task.map(full)
        best["sd"] = best.sd / best.task.map(full)
    table = best.pivot_table(index=["method", "budget"], columns="task", values="value", aggfunc="first")
    table["AVG"] = table.mean(axis=1, skipna=False)
    order = sorted(table.index, key=lambda mb: (mb[0] != "full", mb[0], -mb[1]))
    return table.loc[order], best


def format_summary(
    table: pd.DataFrame, details: pd.DataFrame, *, retention: bool = False, tolerance: float = 0.25
) -> str:
    """The summary table, then what its cells are, the trials and seeds behind each method, and each
    method's skip score."""
    d = details.set_index(["method", "budget", "task"])
    tasks = [c for c in table.columns if c != "AVG"]

    def number(v: float) -> str:
        return f"{v:.1%}" if retention else f"{100 * v:.1f}"

    def cell(method, budget, task, v) -> str:
        if pd.isna(v):
            return "-"
        r = d.loc[(method, budget, task)]
        spread = f"±{number(r.sd).rstrip('%')}" if r.sd == r.sd else ""
        over = "*" if method != "full" and r.layers > budget + tolerance else ""
        return f"{number(v)}{spread} ({r.layers:.2f}){over}"

    cells = {(m, b): [cell(m, b, t, row[t]) for t in tasks] for (m, b), row in table.iterrows()}
    width = max([16, *(len(c) + 2 for cs in cells.values() for c in cs)])
    head = f"{'method':<8} {'budget':>6}  " + "".join(f"{t:>{width}}" for t in tasks) + f"{'AVG':>9}"
    lines = [head, "-" * len(head)]
    for (method, budget), row in table.iterrows():
        avg = "-" if pd.isna(row["AVG"]) else number(row["AVG"])
        lines.append(
            f"{method:<8} {budget:>6g}  "
            + "".join(f"{c:>{width}}" for c in cells[(method, budget)])
            + f"{avg:>9}"
        )
    points = details[details.method != "full"]
    excluded = int(points.n_invalid.sum())
    metric_names = details.drop_duplicates("task").set_index("task").metric_name
    confirmed = points[points.shown == "confirmed"]
    if len(confirmed) and len(confirmed) == len(points[points.found]):
        what = "mean ± std over each best configuration's confirmation seeds"
    elif len(confirmed):
        what = "mean ± std over confirmation seeds where the sweep ran them, else the best search trial"
    else:
        what = "the best search trial's dev metric (the maximum over searched trials, no confirmation seeds)"
    lines.append(
        f"cells: {what}, {'as % of the full model' if retention else 'x100'} (mean executed layers); "
        + ", ".join(f"{t}: {metric_names[t]}" for t in tasks)
        + f"; {excluded} search points excluded (failed, stopped or over budget)"
    )
    shown = points[points.found]  # budgets without a valid point have no cell, nor seeds
    if (shown.layers > shown.budget + tolerance).any():
        lines.append(f"* over budget + {tolerance:g} on average over its confirmation seeds")
    effort = []
    for (task, method), g in points.groupby(["task", "method"], sort=True):
        seeds = sorted(set(g[g.found].n_seeds)) or [0]
        seed_text = "/".join(str(n) for n in seeds) if seeds != [0] else "0"
        effort.append(f"{task} {method}: {int(g.n_trials.max())} trials, {seed_text} seeds")
    if effort:
        lines.append("searched: " + "; ".join(effort))
    scores = skip_scores(details)
    if len(scores):
        refs = sorted(set(scores.reference))
        lines.append(
            "skip score (x100; mean over budgets of metric minus the reference at the same mean layers; "
            f"reference: {', '.join(refs)}): "
            + "; ".join(f"{r.task} {r.method} {100 * r.skip_score:+.1f}" for r in scores.itertuples())
        )
    return "\n".join(lines)


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", default_handler=str)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        return df.to_string(index=False)
