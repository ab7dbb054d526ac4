"""`report()`: a Markdown report with PNG plots, and the hyperparameter importance of each Optuna study.

Every function reads the same thing: a results file (`hadskip train`) or a results dataset folder (the sweep),
local or on an object store, through `hadskip.results.io.read_results`, which sees only complete files, so all
of this works while a sweep is still writing. matplotlib and Optuna load only when used.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd

from hadskip import storage
from hadskip.registry import METHODS, categorical_keys
from hadskip.results.io import read_results
from hadskip.results.schema import COLUMNS, ResultsError
from hadskip.results.tables import format_summary, summary

log = logging.getLogger(__name__)

_COLUMN_NAMES = {name for name, _, _ in COLUMNS}


def _hyperparameter(rows: pd.DataFrame, key: str) -> pd.Series:
    """A searched setting per row: its results column where the schema has one (stage3.lr and exits.lr are
    both `lr`: each row holds its own method's), else read from the row's settings JSON."""
    column = key.split(".")[-1]
    if column in _COLUMN_NAMES:
        return rows[column].astype(float)
    return pd.Series([_setting(js, key) for js in rows.settings], index=rows.index, dtype=float)


def _setting(settings: object, key: str) -> float:
    """A numeric setting from a row's settings JSON (NaN when the row has none)."""
    node = json.loads(settings) if isinstance(settings, str) and settings else {}
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else math.nan


# -- hyperparameter importance ---------------------------------------------------------------------------


def importances(df: pd.DataFrame, *, tolerance: float = 0.25, min_trials: int = 3) -> dict[str, dict]:
    """Per study: each hyperparameter's importance for the trial objective (the mean over budgets of the
    metric, an invalid point counting -1, as the sweep optimised it), from the result rows alone.

    The study is rebuilt in memory from the search rows (Optuna's own storage need not be reachable; the
    confirmation re-runs of the best configuration and curve points are not draws of the searcher and would
    weigh it as often as it was re-seeded) and scored with Optuna's PED-ANOVA evaluator. Studies with fewer
    than `min_trials` trials are skipped.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    points = df[(df.method != "full") & (df.role == "search") & df.study.notna() & df.trial_id.notna()].copy()
    if points.empty:
        return {}
    points["score"] = points.metric.where(
        (points.status == "ok") & (points.mean_layers <= points.budget + tolerance), -1.0
    )
    out: dict[str, dict] = {}
    for study_name, rows in points.groupby("study"):
        rows = rows.copy()
        names = list(METHODS[rows.method.iloc[0]].space)  # what this method's study searched (registry)
        for key in names:
            rows[key] = _hyperparameter(rows, key)
        trials = rows.groupby("trial_id").agg({"score": "mean", **{h: "first" for h in names}})
        varied = [h for h in names if trials[h].nunique() > 1]
        if len(trials) < min_trials or not varied:
            continue
        dists = {}
        for h in varied:
            values = trials[h].astype(float)
            if h in categorical_keys():
                dists[h] = CategoricalDistribution(sorted({int(v) for v in values}))
            else:
                dists[h] = FloatDistribution(float(values.min()), float(values.max()), log=values.min() > 0)
        study = _in_memory_study()
        for _, t in trials.iterrows():
            params = {h: (int(t[h]) if h in categorical_keys() else float(t[h])) for h in varied}
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


def _in_memory_study():
    """An Optuna study without its "A new study created in memory" log line (a report is not a search)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(direction="maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)


# -- report ----------------------------------------------------------------------------------------------


def report(path: str | Path, out: str | Path, *, tolerance: float = 0.25) -> Path:
    """Write `report.md` and its PNG figures into `out`; returns the Markdown file."""
    problem = storage.unwritable_dir(str(out))
    if problem:
        raise ResultsError(f"--out {str(out)!r} cannot hold the report: {problem}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = read_results(path)
    table, best = summary(df, tolerance=tolerance)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [
        f"# HadSkip results: {path}",
        "",
        f"{len(df)} points, tasks: {', '.join(sorted(df.task.unique()))}; "
        f"valid points: status ok and mean executed layers <= budget + {tolerance:g}.",
        "",
        "## Best point per task and budget",
        "",
        "```",
        format_summary(table, best, tolerance=tolerance),
        "```",
        "",
    ]

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

        md += latency_figure(rows, out, task, metric_name)

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


def latency_figure(rows: pd.DataFrame, out: Path, task: str, metric_name: str) -> list[str]:
    """Metric against mean layers and against measured latency (ms per sequence, batch 1 and 32), one line
    per traced checkpoint (`hadskip curve`, the sweep's `--curves`), every method on the same axes; the
    caption names the machine the latencies were measured on."""
    import matplotlib.pyplot as plt

    curves = rows[(rows.role == "curve") & (rows.status == "ok") & rows.metric.notna()]
    if curves.empty:
        return [
            f"No latency curve for {task}: `hadskip curve CHECKPOINT --task {task} --out <results>` or the "
            "sweep's `--curves` adds one.",
            "",
        ]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    xs = [
        ("mean_layers", "mean executed layers (dev)"),
        ("latency_b1_ms", "ms per sequence, batch 1"),
        ("latency_b32_ms", "ms per sequence, batch 32"),
    ]
    for (method, budget, _run), g in curves.groupby(["method", "budget", "run_id"], sort=True):
        g = g.sort_values("mean_layers")
        for ax, (column, _) in zip(axes, xs, strict=True):
            if g[column].notna().any():
                ax.plot(g[column], g.metric, marker=".", label=f"{method} (trained for {budget:g})")
    for ax, (_, label) in zip(axes, xs, strict=True):
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set(ylabel=f"dev {metric_name}")
    axes[0].legend(fontsize=8)
    devices = sorted(set(curves.device.dropna()))
    where = ", ".join(devices) if devices else "latency not measured"
    fig.suptitle(f"{task}: accuracy against layers and latency ({where})")
    fig.tight_layout()
    caption = f"metric against layers and latency; measured on {where}"
    return _save(fig, out / f"{task}-latency.png", caption) + [
        f"Latency measured on {where}; each line is one checkpoint's threshold swept (`hadskip curve`).",
        "",
    ]


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
