"""Parsing of the flags that take lists: one place, one error shape."""

from __future__ import annotations

from collections.abc import Callable

from hadskip.errors import ConfigError


def comma_list(text: str, flag: str, kind: Callable[[str], object], what: str, example: str) -> list:
    """`text` split on commas, each item converted by `kind`; an empty or unparsable item is a one-line
    error (an empty one is a typo, not an item to drop)."""
    items = text.split(",")
    try:
        values = [kind(x) for x in items] if all(x.strip() for x in items) else []
    except ValueError:
        values = []
    if not values:
        raise ConfigError(f"{flag} {text!r} must be a comma list of {what}, e.g. {example}")
    return values


def parse_budgets(text: str) -> list[float]:
    return comma_list(text, "--budgets", float, "layer counts", "4.5,3,1.5")


def positive_ints(text: str, flag: str, example: str = "1,8,32") -> list[int]:
    values = comma_list(text, flag, int, "positive integers", example)
    if min(values) < 1:
        raise ConfigError(f"{flag} {text!r} must be a comma list of positive integers, e.g. {example}")
    return values
