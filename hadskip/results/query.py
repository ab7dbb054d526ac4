"""SQL over the results: DuckDB with the results registered as the table `results`, and nothing else.

The SQL may come from anyone who can run the command (a shared notebook, a CI job), so the connection is
locked down once the table is registered: no files (read_csv, COPY ... TO, ATTACH, glob), no extension
installs, no Python variables by name, and the configuration cannot be changed back.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hadskip.results.io import read_table
from hadskip.results.schema import ResultsError

LOCKDOWN = (
    "SET python_enable_replacements=false",  # no pandas/Arrow objects of the caller's frames by name
    "SET enable_external_access=false",  # no files, URLs, ATTACH, extension installs or loads
    "SET lock_configuration=true",  # last: nothing above can be SET back
)


def query(path: str | Path, sql: str) -> pd.DataFrame:
    """Run DuckDB SQL over the results, registered as the table `results` (the only thing it sees)."""
    import duckdb

    table = read_table(path)
    con = duckdb.connect()
    try:
        con.register("results", table)
        for setting in LOCKDOWN:
            con.execute(setting)
        return con.execute(sql).df()
    except duckdb.Error as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ResultsError(f"SQL error: {first}") from None
    finally:
        con.close()
