"""SQL over the results: DuckDB with the results registered as the table `results`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hadskip.results.io import read_table
from hadskip.results.schema import ResultsError


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run DuckDB SQL over the results, registered as the table `results`."""
    import duckdb

    table = read_table(path)
    con = duckdb.connect()
    try:
        con.register("results", table)
        return con.execute(sql).df()
    except duckdb.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResultsError(f"SQL error: {first}") from None
    finally:
        con.close()
