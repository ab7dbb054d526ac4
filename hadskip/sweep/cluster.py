"""Offline check of a Ray cluster-launcher YAML (`ray up` config) against Ray's own schema."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from hadskip.errors import ConfigError


def validate_cluster_config(path: str | Path) -> dict:
    """Fill Ray's provider defaults and validate against its JSON schema, with no cloud access.

    Ray exposes this only through a private module (`ray.autoscaler._private.util`); it is wrapped here so
    a Ray upgrade that moves it breaks one function.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cluster config {str(path)!r} cannot be read: {err}".splitlines()[0]) from None
    if not isinstance(config, dict):
        raise ConfigError(f"cluster config {str(path)!r} must be a YAML mapping")
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except Exception as err:  # noqa: BLE001 - jsonschema and Ray raise several kinds
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"cluster config {str(path)!r} is invalid: {first}") from None
    return prepared
