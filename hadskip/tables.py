"""Fixed-width text tables: every table the CLI, the sweep and the benchmarks print goes through here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    key: str  # attribute or mapping key of a row
    header: str = ""  # defaults to the key
    fmt: str | Callable[[Any], str] = ""  # a format spec such as ".4f", or a function of the value
    align: str = ">"  # ">" right, "<" left

    def cell(self, row: object) -> str:
        value = row.get(self.key) if isinstance(row, Mapping) else getattr(row, self.key, None)
        if callable(self.fmt):
            return self.fmt(value)
        if value is None or (isinstance(value, float) and value != value and self.fmt):
            return "-"
        return format(value, self.fmt)


def text_table(rows: Iterable[object], columns: list[Column], *, rule: bool = True) -> str:
    """A header, a rule, and one line per row; each column as wide as its widest cell."""
    cells = [[c.cell(r) for c in columns] for r in rows]
    heads = [c.header or c.key for c in columns]
    widths = [max([len(h), *(len(line[i]) for line in cells)]) for i, h in enumerate(heads)]

    def line(values: list[str]) -> str:
        return " ".join(f"{v:{c.align}{w}}" for v, c, w in zip(values, columns, widths, strict=True)).rstrip()

    out = [line(heads)]
    if rule:
        out.append("-" * len(out[0]))
    out += [line(v) for v in cells]
    return "\n".join(out)
