"""The results schema: one definition, documented, versioned, written whole."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest
from conftest import REPO

from hadskip.results import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    ResultRow,
    ResultsError,
    read_results,
    read_table,
    write_point,
    write_table,
)


def _row(**kw):
    base = dict(
        run_id="r1",
        task="cola",
        method="hadskip",
        model="m",
        num_layers=6,
        budget=3.0,
        metric_name="mcc",
        metric=0.3,
        mean_layers=2.9,
        layer_usage=[0.5] * 6,
        layers_hist=[0] * 7,
    )
    base.update(kw)
    return ResultRow(**base)


def test_readme_documents_every_column():
    readme = (REPO / "README.md").read_text()
    documented = set(
        re.findall(r"`([a-z0-9_]+)`", readme.split("## Results schema", 1)[1].split("\n## ", 1)[0])
    )
    assert {name for name, _, _ in COLUMNS} <= documented


def test_write_and_read_a_file(tmp_path):
    write_table([_row(), _row(budget=1.5)], str(tmp_path / "r.parquet"))
    t = pq.read_table(tmp_path / "r.parquet")
    assert t.schema.equals(SCHEMA, check_metadata=False) and t.num_rows == 2
    df = read_results(tmp_path / "r.parquet")
    assert df.budget.tolist() == [3.0, 1.5] and df.package_versions[0].startswith("{")


def test_dataset_folder_reads_complete_files_only(tmp_path):
    write_point(str(tmp_path), _row(), "trial1-b3")
    write_point(str(tmp_path), _row(task="mrpc", budget=1.5), "trial1-b1.5")
    part = tmp_path / "cola" / "budget-3"
    assert (part / "trial1-b3.parquet").is_file()
    (part / ".tmp-half-written").write_bytes(b"PAR1 partial")  # a writer that died mid-file
    t = read_table(str(tmp_path))
    assert sorted(t.column("task").to_pylist()) == ["cola", "mrpc"]


def test_newer_schema_version_is_refused(tmp_path):
    table = pa.Table.from_pylist([_row().model_dump()], schema=SCHEMA)
    table = table.replace_schema_metadata({b"hadskip_schema_version": b"99"})
    pq.write_table(table, tmp_path / "new.parquet")
    with pytest.raises(ResultsError, match=f"schema v99; this hadskip reads up to v{SCHEMA_VERSION}"):
        read_table(str(tmp_path / "new.parquet"))


def test_missing_and_empty_paths_are_clear(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        read_table(str(tmp_path / "nope"))
    with pytest.raises(ResultsError, match="no .parquet files"):
        read_table(str(tmp_path))


def test_rows_are_validated():
    with pytest.raises(pydantic.ValidationError, match="unexpected_column|Extra inputs"):
        ResultRow(**{**_row().model_dump(), "unexpected_column": 1})


def test_version_1_files_read_with_the_v2_columns_empty(tmp_path):
    v2_only = {"speedup", "ideal_speedup", "speed_batch_size"}
    old = pa.schema([f for f in SCHEMA if f.name not in v2_only], metadata={b"hadskip_schema_version": b"1"})
    record = {k: v for k, v in _row().model_dump().items() if k not in v2_only}
    pq.write_table(pa.Table.from_pylist([record], schema=old), tmp_path / "v1.parquet")
    df = read_results(tmp_path / "v1.parquet")
    assert df.speedup.isna().all() and df.metric[0] == record["metric"]


def test_version_2_files_read_as_search_points(tmp_path):
    v3_only = {"latency_b1_ms", "latency_b32_ms", "device", "dtype", "role", "confirms"}
    old = pa.schema([f for f in SCHEMA if f.name not in v3_only], metadata={b"hadskip_schema_version": b"2"})
    record = {k: v for k, v in _row().model_dump().items() if k not in v3_only}
    pq.write_table(pa.Table.from_pylist([record], schema=old), tmp_path / "v2.parquet")
    write_point(str(tmp_path), _row(role="curve", budget=1.5), "curve-1")
    df = read_results(tmp_path)
    assert sorted(df.role) == ["curve", "search"] and df.device.isna().all()
