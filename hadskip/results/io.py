"""Reading and writing results as Parquet: one file per `hadskip train` run, or a sweep's folder of point files.

Files are written whole (temp file + rename) so a reader never sees half a file, and a reader may query while
a sweep is still writing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hadskip import storage
from hadskip.results.schema import COLUMNS, SCHEMA, SCHEMA_VERSION, VERSION_KEY, ResultRow, ResultsError

log = logging.getLogger(__name__)

# Columns every results file has had, in every schema version: a file without them is not ours.
KEY_COLUMNS = ("task", "method", "budget", "metric", "status")


def rows_to_table(rows: list[ResultRow | dict[str, Any]]) -> pa.Table:
    records = [(r if isinstance(r, ResultRow) else ResultRow(**r)).model_dump() for r in rows]
    return pa.Table.from_pylist(records, schema=SCHEMA)


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_table(rows: list[ResultRow | dict[str, Any]], uri: str) -> None:
    """Write `rows` as one Parquet file, atomically."""
    storage.write_bytes_atomic(str(uri), _table_bytes(rows_to_table(rows)))


def point_file(root: str, row: ResultRow, name: str) -> str:
    """Where a sweep point lives: <root>/<task>/budget-<budget>/<name>.parquet.

    The folder names are not hive `key=value` pairs on purpose: every file holds `task` and `budget`
    columns, and a hive-partitioned reader (pandas.read_parquet, pyarrow.dataset with "hive", DuckDB with
    hive_partitioning, polars) would add the same names from the path with another type and fail.
    """
    return storage.join(str(root), row.task, f"budget-{row.budget:g}", f"{name}.parquet")


def legacy_point_file(root: str, row: ResultRow, name: str) -> str:
    """Where sweeps before the layout change wrote a point: <root>/task=<task>/budget=<budget>/..."""
    return storage.join(str(root), f"task={row.task}", f"budget={row.budget:g}", f"{name}.parquet")


def point_exists(root: str, row: ResultRow, name: str) -> bool:
    """Whether a point is written, in either layout (a sweep resumed across the change is not repeated)."""
    return any(storage.exists(f(root, row, name)) for f in (point_file, legacy_point_file))


def write_point(root: str, row: ResultRow, name: str) -> str:
    """Add one point to a results dataset folder (append-only: one file per point)."""
    uri = point_file(root, row, name)
    write_table([row], uri)
    return uri


def _check_version(schema: pa.Schema, where: str) -> None:
    raw = (schema.metadata or {}).get(VERSION_KEY)
    if raw is not None and int(raw) > SCHEMA_VERSION:
        raise ResultsError(
            f"{where} was written with results schema v{int(raw)}; this hadskip reads up to v{SCHEMA_VERSION} "
            "(upgrade hadskip)"
        )


def read_table(uri: str | Path) -> pa.Table:
    """Read a results file or a results folder (only complete files: temp files start with '.')."""
    fs, path = storage.resolve(str(uri))
    info = fs.get_file_info(path)
    if info.type == storage.pafs.FileType.NotFound:
        raise ResultsError(f"no results at {uri!s}: the path does not exist")
    if info.type == storage.pafs.FileType.File:
        files = [path]
    else:
        selector = storage.pafs.FileSelector(path, recursive=True)
        files = sorted(
            f.path
            for f in fs.get_file_info(selector)
            if f.type == storage.pafs.FileType.File
            and f.path.endswith(".parquet")
            and not any(part.startswith((".", "_")) for part in f.path[len(path) :].split("/"))
        )
    if not files:
        raise ResultsError(f"no results at {uri!s}: no .parquet files there")
    tables, foreign = [], []
    for f in files:
        try:
            t = pq.read_table(f, filesystem=fs, partitioning=None)
        except Exception as err:  # noqa: BLE001
            raise ResultsError(f"{f} is not a readable Parquet file ({type(err).__name__})") from None
        missing = [c for c in KEY_COLUMNS if c not in t.column_names]
        if missing:  # another tool's file beside ours: skip it, say so
            log.warning("skipping %s: not a hadskip results file (no %s column)", f, ", ".join(missing))
            foreign.append(f)
            continue
        _check_version(t.schema, f)
        tables.append(t)
    if not tables:
        raise ResultsError(
            f"no results at {uri!s}: {len(foreign)} Parquet file(s), none with the hadskip results columns "
            f"({', '.join(KEY_COLUMNS)}), e.g. {foreign[0]}"
        )
    table = pa.concat_tables(tables, promote_options="permissive")
    missing = [n for n, _, _ in COLUMNS if n not in table.column_names]
    for name in missing:
        table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
    # every point written before v3 was a trained (search) point
    i = table.column_names.index("role")
    return table.set_column(i, SCHEMA.field("role"), pc.fill_null(table.column("role"), "search"))


def read_results(uri: str | Path):
    """Results as a pandas DataFrame."""
    return read_table(uri).to_pandas()
