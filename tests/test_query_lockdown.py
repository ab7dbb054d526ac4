"""`hadskip results query` sees the results and nothing else: no files, extensions or settings."""

from __future__ import annotations

import pytest
from test_results import _row

from hadskip.cli import main
from hadskip.results import ResultsError, query, write_table


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.parquet"
    write_table([_row(), _row(budget=1.5, metric=0.1)], str(path))
    return path


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '{tmp}/x.csv'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/root/*')",
        "ATTACH '{tmp}/db.duckdb'",
        "INSTALL httpfs",
        "SET enable_external_access=true",
        "SET lock_configuration=false",
        "SELECT * FROM '{tmp}/results.parquet'",
    ],
)
def test_sql_cannot_reach_past_the_results(results, tmp_path, capsys, sql):
    sql = sql.format(tmp=tmp_path)
    with pytest.raises(ResultsError, match="SQL error: .*(Permission|Cannot change configuration)"):
        query(results, sql)
    assert main(["results", "query", str(results), sql]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hadskip: error: SQL error:") and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_a_normal_query_still_works(results):
    df = query(results, "SELECT budget, max(metric) AS best FROM results GROUP BY ALL ORDER BY budget")
    assert df["budget"].tolist() == [1.5, 3.0] and df["best"].tolist() == [0.1, 0.3]
