"""`hadskip curve` on checkpoints the real trainer wrote (tiny BERT): one row per threshold, marked as curve
points, monotone in mean layers, the trained point among them, latency measured."""

from __future__ import annotations

import math
import shutil

import matplotlib.image
import pytest
from test_pipeline import _argv

from hadskip.cli import main
from hadskip.results import read_results, report, summary


@pytest.fixture(scope="module")
def trained(tiny_model_dir, glue_dir, tmp_path_factory):
    """A HadSkip run and an entropy early-exit run, checkpoints kept."""
    root = tmp_path_factory.mktemp("curve-runs")
    for method in ("hadskip", "entropy"):
        argv = _argv(
            tiny_model_dir,
            glue_dir,
            root / method,
            root / "cache",
            "--method",
            method,
            "--set",
            "exits.max_steps=2",
            "--set",
            "exits.calibration_rows=64",
        )
        assert main(argv) == 0
    return root


def _curve(trained, glue_dir, method, tmp_path, *extra):
    out = tmp_path / "curves"
    ckpt = trained / method / "checkpoints" / "budget-3"
    argv = ["-q", "curve", str(ckpt), "--task", "cola", "--data-dir", str(glue_dir), "--out", str(out)]
    assert main([*argv, *extra]) == 0
    df = read_results(out)
    return df.sort_values("gate_threshold", na_position="last").reset_index(drop=True)


def test_hadskip_curve_is_monotone_and_holds_the_trained_point(trained, glue_dir, tmp_path, capsys):
    df = _curve(trained, glue_dir, "hadskip", tmp_path, "--points", "9", "--latency-rows", "16")
    assert (df.role == "curve").all() and (df.method == "hadskip").all() and len(df) >= 2
    assert (df.budget == 3).all() and df.checkpoint.str.endswith("budget-3").all()
    # p(run) above the threshold runs a layer: mean layers never rise as the threshold does
    assert (df.mean_layers.diff().dropna() <= 1e-9).all()
    trained_row = read_results(trained / "hadskip" / "results.parquet")
    at3 = trained_row[(trained_row.method == "hadskip") & (trained_row.budget == 3)].iloc[0]
    same = df[(df.gate_threshold - at3.gate_threshold).abs() < 1e-12]
    assert len(same) == 1 or (df.mean_layers == at3.mean_layers).any()  # deduplicated if routing repeats
    if len(same):
        assert (
            same.metric.iloc[0] == pytest.approx(at3.metric) and same.mean_layers.iloc[0] == at3.mean_layers
        )
    assert (df.latency_b1_ms > 0).all() and (df.latency_b32_ms > 0).all()
    assert df.device.str.startswith("cpu").all() and (df.dtype == "float32").all()
    assert "curve points on cpu" in capsys.readouterr().out
    # curve rows never become a search point of the summary
    with pytest.raises(Exception, match="no points to summarise"):
        summary(tmp_path / "curves")

    # beside the run's own rows, the report plots metric against layers and latency, the device named
    shutil.copy(trained / "hadskip" / "results.parquet", tmp_path / "curves" / "run.parquet")
    text = report(tmp_path / "curves", tmp_path / "report").read_text()
    assert "](cola-latency.png)" in text and f"measured on {df.device.iloc[0]}" in text
    image = matplotlib.image.imread(tmp_path / "report" / "cola-latency.png")
    assert image.ndim == 3 and image.shape[1] > 300


def test_exit_curve_runs_from_first_exits_to_every_layer(trained, glue_dir, tmp_path):
    df = _curve(trained, glue_dir, "entropy", tmp_path, "--points", "6", "--latency-rows", "0")
    assert (df.method == "entropy").all() and df.latency_b1_ms.isna().all()
    # exit when the score reaches the threshold: mean layers never fall as it rises; no threshold: every layer
    assert (df.mean_layers.diff().dropna() >= -1e-9).all()
    assert df.mean_layers.iloc[-1] == 4 and math.isnan(df.gate_threshold.iloc[-1])


@pytest.mark.parametrize(
    "extra,message",
    [(["--points", "1"], "--points 1 must be at least 2"), (["--latency-rows", "-1"], "--latency-rows -1")],
)
def test_bad_curve_arguments_are_one_line_errors(trained, glue_dir, tmp_path, capsys, extra, message):
    ckpt = trained / "hadskip" / "checkpoints" / "budget-3"
    argv = ["curve", str(ckpt), "--task", "cola", "--data-dir", str(glue_dir), "--out", str(tmp_path / "c")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()
