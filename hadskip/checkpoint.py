"""`hadskip.load`: open any checkpoint this package writes, whichever kind of model it holds.

A checkpoint says what it is in its `hadskip.json`: a HadSkip gated model, or an early-exit baseline's
`ExitModel` (`"kind": "exit"`). This is the one place that knows both kinds.
"""

from __future__ import annotations

import json
from pathlib import Path

from hadskip.baselines.exit_model import ExitModel
from hadskip.core.model import META_FILE, GatedModel
from hadskip.errors import CheckpointError


def checkpoint_kind(path: str | Path) -> str:
    """ "exit" for an early-exit checkpoint, else "gated" (also when the metadata is unreadable: loading the
    gated model then names the damage)."""
    meta = Path(path) / META_FILE
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("kind") == "exit":
                return "exit"
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            pass
    return "gated"


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or damaged: from_pretrained names it
        return None
    return value if isinstance(value, dict) else None


def check_layers(path: str | Path) -> None:
    """The HF config and hadskip.json must agree on the layer count: gates for another depth would load
    onto the wrong layers (or half of them) without a word."""
    path = Path(path)
    config, meta = _json(path / "config.json"), _json(path / META_FILE)
    if config is None or meta is None:
        return
    layers = config.get("num_hidden_layers", config.get("n_layers"))  # n_layers: DistilBERT
    if layers is not None and meta.get("num_layers") is not None and int(layers) != int(meta["num_layers"]):
        raise CheckpointError(
            f"checkpoint {path}: config.json has num_hidden_layers={layers} but {META_FILE} has "
            f"num_layers={meta['num_layers']}; they must agree (was config.json replaced?)"
        )


def load(path: str | Path, device: str = "cpu") -> GatedModel:
    """Load a saved model (with its tokenizer) in one call: a HadSkip gated model, or an early-exit
    baseline's `ExitModel`, whichever the checkpoint holds."""
    check_layers(path)
    cls = ExitModel if checkpoint_kind(path) == "exit" else GatedModel
    return cls.from_pretrained(path, device=device)
