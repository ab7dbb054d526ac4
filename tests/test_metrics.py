"""GLUE metrics against values worked out by hand (and against scikit-learn / scipy where installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hadskip.data.metrics import (
    accuracy,
    f1,
    layer_stats,
    majority_score,
    mcc,
    pearson,
    spearman,
    task_metrics,
)

PREDS = np.array([1, 1, 0, 1, 0, 0, 1, 0])
LABELS = np.array([1, 0, 0, 1, 1, 0, 1, 0])
# tp=3 (0,3,6), fp=1 (1), fn=1 (4), tn=3 (2,5,7)


def test_binary_metrics_by_hand():
    assert accuracy(PREDS, LABELS) == pytest.approx(6 / 8)
    assert f1(PREDS, LABELS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert mcc(PREDS, LABELS) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))


def test_constant_predictor_edges():
    ones = np.ones(8, dtype=int)
    assert mcc(ones, LABELS) == 0.0
    assert f1(np.zeros(8, dtype=int), LABELS) == 0.0
    assert f1(ones, LABELS) == pytest.approx(2 * 4 / (2 * 4 + 4))


def test_correlations_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    y = np.array([1.0, 3.0, 2.0, 4.0])
    # centred: x -1.5 -.5 .5 1.5 ; y -1.5 .5 -.5 1.5 ; sum xy = 2.25-.25-.25+2.25 = 4 ; sum x^2 = sum y^2 = 5
    assert pearson(x, y) == pytest.approx(4 / 5)
    assert spearman(x, x**3) == pytest.approx(1.0)
    # ties get average ranks: [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]
    assert spearman(np.array([1.0, 2, 2, 3]), x) == pytest.approx(pearson(np.array([1, 2.5, 2.5, 4]), x))


def test_against_reference_libraries():
    sk = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    p, y = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    assert mcc(p, y) == pytest.approx(sk.matthews_corrcoef(y, p))
    assert f1(p, y) == pytest.approx(sk.f1_score(y, p))
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])


def test_task_metric_sets():
    assert set(task_metrics("cola", PREDS, LABELS)) == {"mcc"}
    assert set(task_metrics("mrpc", PREDS, LABELS)) == {"f1", "accuracy"}
    assert set(task_metrics("qqp", PREDS, LABELS)) == {"f1", "accuracy"}
    assert set(task_metrics("stsb", PREDS * 1.0, LABELS * 1.0)) == {"pearson", "spearman"}
    assert set(task_metrics("mnli", PREDS, LABELS, suffix="_mm")) == {"accuracy_mm"}


def test_majority_score_is_the_constant_predictor():
    train = np.array([1, 1, 1, 0])
    assert majority_score("mrpc", train, LABELS) == pytest.approx(f1(np.ones(8, int), LABELS))
    assert majority_score("cola", train, LABELS) == 0.0


def test_layer_stats():
    executed = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=bool)
    s = layer_stats(executed)
    assert s["mean_layers"] == pytest.approx(6 / 4)
    assert s["layer_usage"] == pytest.approx([0.75, 0.5, 0.25])
    assert s["layers_hist"] == [1, 1, 1, 1]
