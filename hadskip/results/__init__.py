"""Results: the schema (one row builder), Parquet io, the summary tables, SQL, and the report.

```python
from hadskip.results import read_results, summary, query, report
```
DuckDB and matplotlib load only when `query` or `report` run.
"""

from hadskip.results.io import point_exists, point_file, read_results, read_table, write_point, write_table
from hadskip.results.query import query
from hadskip.results.report import importances, pareto_front, report
from hadskip.results.schema import (
    COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    ResultRow,
    ResultsError,
    make_row,
    new_run_id,
)
from hadskip.results.tables import (
    best_points,
    format_summary,
    render,
    skip_scores,
    summary,
    with_confirmations,
)

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ResultRow",
    "ResultsError",
    "best_points",
    "format_summary",
    "importances",
    "make_row",
    "new_run_id",
    "pareto_front",
    "point_exists",
    "point_file",
    "query",
    "read_results",
    "read_table",
    "render",
    "report",
    "skip_scores",
    "summary",
    "with_confirmations",
    "write_point",
    "write_table",
]
