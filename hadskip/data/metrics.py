"""GLUE metrics computed locally (no metric scripts fetched at run time), and skip statistics.

Definitions follow GLUE: Matthews correlation for CoLA, binary F1 of the positive class (and accuracy) for
MRPC and QQP, Pearson (and Spearman) correlation for STS-B, accuracy elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

from hadskip.data.tasks import Task, get_task


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(preds) == np.asarray(labels)))


def _confusion(preds: np.ndarray, labels: np.ndarray) -> tuple[int, int, int, int]:
    p, y = np.asarray(preds).astype(bool), np.asarray(labels).astype(bool)
    return int(np.sum(p & y)), int(np.sum(p & ~y)), int(np.sum(~p & y)), int(np.sum(~p & ~y))


def f1(preds: np.ndarray, labels: np.ndarray) -> float:
    """F1 of the positive class (label 1). 0 when there are no true positives."""
    tp, fp, fn, _ = _confusion(preds, labels)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def mcc(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation for binary labels; 0 when any marginal is empty (a constant predictor)."""
    tp, fp, fn, tn = _confusion(preds, labels)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def pearson(preds: np.ndarray, labels: np.ndarray) -> float:
    x = np.asarray(preds, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(np.sum(xc * xc) * np.sum(yc * yc)))
    return 0.0 if denom == 0 else float(np.sum(xc * yc) / denom)


def spearman(preds: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of the ranks (ties get their average rank)."""
    return pearson(rankdata(preds), rankdata(labels))


_TASK_METRICS = {
    "mcc": {"mcc": mcc},
    "f1": {"f1": f1, "accuracy": accuracy},
    "pearson": {"pearson": pearson, "spearman": spearman},
    "accuracy": {"accuracy": accuracy},
}


def task_metrics(
    task: str | Task, preds: np.ndarray, labels: np.ndarray, suffix: str = ""
) -> dict[str, float]:
    """Every GLUE metric of `task` on one split, keyed by name (+ `suffix`, e.g. "_mm" for MNLI)."""
    task = get_task(task) if isinstance(task, str) else task
    return {f"{name}{suffix}": fn(preds, labels) for name, fn in _TASK_METRICS[task.metric].items()}


def predictions(task: str | Task, logits: np.ndarray) -> np.ndarray:
    """Logits (N, C) to class ids, or (N, 1) to regression scores."""
    task = get_task(task) if isinstance(task, str) else task
    return logits[:, 0] if task.is_regression else logits.argmax(axis=-1)


def majority_score(task: str | Task, train_labels: np.ndarray, dev_labels: np.ndarray) -> float:
    """The primary metric of always predicting the most frequent training label (the 'do nothing' floor)."""
    task = get_task(task) if isinstance(task, str) else task
    if task.is_regression:
        return 0.0
    constant = np.full_like(dev_labels, np.bincount(train_labels).argmax())
    return task_metrics(task, constant, dev_labels)[task.metric]


def layer_stats(executed: np.ndarray) -> dict[str, object]:
    """Skip statistics from a (N, L) boolean matrix of executed layers per dev sequence."""
    executed = np.asarray(executed, dtype=bool)
    n, num_layers = executed.shape
    per_seq = executed.sum(axis=1)
    return {
        "mean_layers": float(per_seq.mean()) if n else float("nan"),
        "layer_usage": executed.mean(axis=0).astype(float).tolist() if n else [0.0] * num_layers,
        "layers_hist": np.bincount(per_seq, minlength=num_layers + 1).astype(int).tolist(),
    }
