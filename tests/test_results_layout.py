"""A sweep's results folder opens in every common Parquet reader, with the rows hadskip reads."""

from __future__ import annotations

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from hadskip.config import RunSettings
from hadskip.results import make_row, point_exists, read_results, write_point
from hadskip.results.io import rows_to_table

KEYS = ["run_id", "task", "method", "budget", "metric", "mean_layers"]


def _points(root) -> None:
    for task, metric in (("cola", "mcc"), ("mrpc", "f1")):
        settings = RunSettings.model_validate({"data": {"task": task}, "seed": 3})
        for trial in ("t1", "t2"):
            for budget, layers in ((4.5, 4.4), (1.5, 1.6)):
                row = make_row(
                    settings,
                    run_id=trial,
                    method="hadskip",
                    num_layers=6,
                    budget=budget,
                    metric=0.5 + budget / 10,
                    metrics={metric: 0.5 + budget / 10},
                    layer_stats={"mean_layers": layers, "layer_usage": [0.5] * 6, "layers_hist": [1] * 7},
                    sweep_id="s",
                    trial_id=trial,
                )
                write_point(str(root), row, trial)


def _normal(df: pd.DataFrame) -> list[tuple]:
    df = df[KEYS].astype({"task": str, "budget": float})
    return sorted(map(tuple, df.itertuples(index=False)))


@pytest.fixture
def folder(tmp_path):
    _points(tmp_path / "results")
    return tmp_path / "results"


def test_points_live_in_folders_that_are_not_hive_keys(folder):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    assert files[0] == "cola/budget-1.5/t1.parquet" and len(files) == 8
    assert not any("=" in f for f in files)


@pytest.mark.parametrize("reader", ["pandas", "pyarrow", "duckdb", "polars"])
def test_every_reader_gets_the_rows_hadskip_reads(folder, reader):
    expected = _normal(read_results(folder))
    assert len(expected) == 8
    if reader == "pandas":
        got = pd.read_parquet(folder)
    elif reader == "pyarrow":
        got = ds.dataset(folder, partitioning="hive").to_table().to_pandas()
    elif reader == "duckdb":
        import duckdb

        got = duckdb.sql(f"SELECT * FROM read_parquet('{folder}/**/*.parquet', hive_partitioning=true)").df()
    else:
        pl = pytest.importorskip("polars")
        got = pl.read_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).to_pandas()
    assert _normal(got) == expected


def test_points_of_the_old_layout_still_read_and_count_as_written(folder):
    old = make_row(
        RunSettings.model_validate({"data": {"task": "cola"}}),
        run_id="t0",
        method="hadskip",
        num_layers=6,
        budget=3.0,
        metric=0.4,
    )
    legacy = folder / "task=cola" / "budget=3" / "t0.parquet"
    legacy.parent.mkdir(parents=True)
    pq.write_table(rows_to_table([old]), legacy)  # what write_point wrote before the layout change
    assert point_exists(str(folder), old, "t0") and not (folder / "cola" / "budget-3").exists()
    df = read_results(folder)
    assert len(df) == 9 and "t0" in df["run_id"].tolist()
