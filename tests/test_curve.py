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


# -- hadskip routes ---------------------------------------------------------------------------------------


def test_route_summary_groups_routes_and_depths():
    import numpy as np

    from hadskip.data.routes import route_summary

    executed = np.array([[1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=bool)
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([1, 1, 1, 0, 1])
    s = route_summary(executed, labels, preds, regression=False)
    assert s.routes == [("1.3", 0.6), ("1.2.3", 0.2), ("-", 0.2)] and s.distinct == 3 and not s.static
    assert s.mean_layers == pytest.approx(1.8) and s.layer_usage == pytest.approx([0.8, 0.2, 0.8])
    by_depth = {g.layers: g for g in s.groups}
    assert sorted(by_depth) == [0, 2, 3] and sum(g.rows for g in s.groups) == 5
    assert by_depth[2].accuracy == pytest.approx(2 / 3) and by_depth[2].gold_common == pytest.approx(2 / 3)
    assert by_depth[3].pred_common == 0.0 and s.common_label == 1
    same = route_summary(np.ones((20, 2), dtype=bool), np.zeros(20), np.zeros(20), regression=True)
    assert same.static and same.groups[0].abs_error == 0.0 and same.groups[0].accuracy is None


def test_routes_of_a_trained_checkpoint(trained, glue_dir, capsys):
    ckpt = trained / "hadskip" / "checkpoints" / "budget-3"
    assert main(["-q", "routes", str(ckpt), "--task", "cola", "--data-dir", str(glue_dir)]) == 0
    out = capsys.readouterr().out
    row = read_results(trained / "hadskip" / "results.parquet")
    at3 = row[(row.method == "hadskip") & (row.budget == 3)].iloc[0]
    assert f"{at3.mean_layers:.2f} ±" in out and "trained for budget 3" in out
    # a threshold no p(run) exceeds runs nothing: one empty route for every row, called static
    assert (
        main(["-q", "routes", str(ckpt), "--task", "cola", "--data-dir", str(glue_dir), "--threshold", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "0.00 ± 0.00 layers" in out and "1 distinct routes" in out and "one route serves 100%" in out
    exit_ckpt = trained / "entropy" / "checkpoints" / "budget-3"
    assert main(["-q", "routes", str(exit_ckpt), "--task", "cola", "--data-dir", str(glue_dir)]) == 0
    assert "entropy on cola dev" in capsys.readouterr().out
    assert main(["-q", "routes", str(ckpt), "--task", "cola", "--top", "0"]) == 2
    assert "--top 0 must be at least 1" in capsys.readouterr().err


def test_shuffled_routes_keep_every_route_and_only_move_them_between_rows():
    import numpy as np

    from hadskip.data.routes import ShuffleTest, shuffled_routes

    executed = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0], [0, 1, 1]], dtype=bool)
    first, second = shuffled_routes(executed, 2, seed=3)
    for shuffled in (first, second):
        assert sorted(map(tuple, shuffled)) == sorted(map(tuple, executed))
    assert not (first == executed).all() and not (first == second).all()
    assert (shuffled_routes(executed, 1, seed=3)[0] == first).all()  # seeded: the same first shuffle
    t = ShuffleTest(metric="mcc", own=0.5, shuffled=(0.4, 0.5, 0.6))
    assert t.at_least_own == 2 and t.p_value == pytest.approx(3 / 4)
    assert t.mean == pytest.approx(0.5) and t.sd == pytest.approx(0.1)


def test_forced_routes_reproduce_the_gates_own_decisions(trained, glue_dir):
    import numpy as np
    import torch

    from hadskip.core.inference import predict
    from hadskip.core.runtime import Runtime
    from hadskip.run.curve import open_checkpoint

    runtime = Runtime(device=torch.device("cpu"))
    ckpt = trained / "hadskip" / "checkpoints" / "budget-3"
    model, _, _, data, _ = open_checkpoint(ckpt, "cola", str(glue_dir), runtime)
    dev = data.dev["dev"]
    own = predict(model, dev, runtime, 16)
    again = predict(model, dev, runtime, 16, routes=own.executed)
    assert np.array_equal(again.executed, own.executed) and np.allclose(again.logits, own.logits, atol=1e-6)
    none = predict(model, dev, runtime, 16, routes=np.zeros_like(own.executed))
    skipped = predict(model, dev, runtime, 16, threshold=1.0)
    assert not none.executed.any() and np.allclose(none.logits, skipped.logits, atol=1e-6)
    every = predict(model, dev, runtime, 16, routes=np.ones_like(own.executed))
    assert np.allclose(every.logits, predict(model, dev, runtime, 16, open_gates=True).logits, atol=1e-6)
    with pytest.raises(ValueError, match="one route per row"):
        predict(model, dev, runtime, 16, routes=own.executed[:-1])


def test_routes_against_their_own_shuffles(trained, glue_dir, capsys):
    ckpt = trained / "hadskip" / "checkpoints" / "budget-3"
    argv = ["-q", "routes", str(ckpt), "--task", "cola", "--data-dir", str(glue_dir)]
    assert main([*argv, "--shuffles", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "the same routes shuffled across the rows (3 shuffles, seed 1)" in out
    assert "19 or more shuffles" in out
    # one route for every row (nothing runs at threshold 1): a shuffle changes nothing, so every shuffle
    # scores exactly the model's own routing
    assert main([*argv, "--threshold", "1", "--shuffles", "2"]) == 0
    out = capsys.readouterr().out
    assert "at or above its own in 2 of 2 (p = 1.000)" in out and "own - shuffled: +0.0000" in out
    assert main([*argv, "--shuffles", "-1"]) == 2
    assert "--shuffles -1 must be 0 (off) or more" in capsys.readouterr().err
    exit_ckpt = trained / "entropy" / "checkpoints" / "budget-3"
    exit_argv = [
        "-q",
        "routes",
        str(exit_ckpt),
        "--task",
        "cola",
        "--data-dir",
        str(glue_dir),
        "--shuffles",
        "2",
    ]
    assert main(exit_argv) == 2
    err = capsys.readouterr().err
    assert "--shuffles needs a HadSkip checkpoint" in err and len(err.strip().splitlines()) == 1
