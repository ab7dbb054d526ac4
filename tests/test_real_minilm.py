"""A short real run: the all-MiniLM-L6-v2 weights on real CoLA rows, every stage, every code path."""

from __future__ import annotations

import pytest

from hadskip.config import build_settings
from hadskip.results import read_results
from hadskip.run.train import train_run


@pytest.mark.slow
def test_short_real_run_on_minilm_and_cola(tmp_path, minilm_path, glue_dir):
    settings = build_settings(
        {"data": {"task": "cola", "data_dir": str(glue_dir), "train_limit": 64, "dev_limit": 64}},
        [
            f'model.name_or_path="{minilm_path}"',
            "budgets=[4.5, 1.5]",
            "stage1.max_steps=3",
            "stage2.max_steps=2",
            "stage3.max_steps=1",
            "stage1.batch_size=16",
            "stage2.batch_size=16",
            "stage3.batch_size=16",
            "stage3.calibration_rows=64",
            "threads=2",
        ],
    )
    rows = train_run(settings, str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    assert [(r.method, r.budget) for r in rows] == [("full", 6.0), ("hadskip", 4.5), ("hadskip", 1.5)]
    df = read_results(tmp_path / "run" / "results.parquet")
    assert (df.num_layers == 6).all() and (df.status == "ok").all()
    assert df.mean_layers[1] == pytest.approx(4.5, abs=1.0) and df.mean_layers[2] == pytest.approx(
        1.5, abs=1.0
    )
    assert df.mean_layers[2] < df.mean_layers[1]
    assert all(len(u) == 6 for u in df.layer_usage)
