"""bench/cross_budget.py: each saved point served at every budget of its run, calibrated as training does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from test_pipeline import _argv

from hadskip.cli import main
from hadskip.results import read_results

spec = importlib.util.spec_from_file_location(
    "bench_cross_budget", Path(__file__).resolve().parents[1] / "bench" / "cross_budget.py"
)
cross_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cross_budget)


def test_every_point_is_served_at_every_budget_and_the_diagonal_is_the_runs_own_result(
    tmp_path, tiny_model_dir, glue_dir
):
    run = tmp_path / "run"
    assert main(_argv(tiny_model_dir, glue_dir, run, tmp_path / "cache")) == 0  # budgets 3 and 1.5 of 4
    rows = cross_budget.cross_rows(run)
    assert [(r["trained"], r["served"]) for r in rows] == [(3, 3), (3, 1.5), (1.5, 3), (1.5, 1.5)]
    published = read_results(run / "results.parquet").set_index("budget")
    for r in rows:
        if r["trained"] == r["served"]:  # the same calibration as training: the same threshold and figures
            point = published.loc[r["served"]]
            assert r["threshold"] == pytest.approx(point.gate_threshold)
            assert r["metric"] == pytest.approx(point.metric)
            assert r["layers"] == pytest.approx(point.mean_layers)
        assert r["metric_name"] == "mcc" and 0 <= r["layers"] <= 4


def test_a_run_without_checkpoints_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoints/budget-"):
        cross_budget.cross_rows(tmp_path)
