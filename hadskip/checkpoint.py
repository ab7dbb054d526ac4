"""`hadskip.load`: open any checkpoint this package writes, whichever kind of model it holds.

A checkpoint says what it is in its `hadskip.json`: a HadSkip gated model, or an early-exit baseline's
`ExitModel` (`"kind": "exit"`). This is the one place that knows both kinds.
"""

from __future__ import annotations

import json
from pathlib import Path

from hadskip.baselines.exit_model import ExitModel
from hadskip.core.model import META_FILE, GatedModel


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


def load(path: str | Path, device: str = "cpu") -> GatedModel:
    """Load a saved model (with its tokenizer) in one call: a HadSkip gated model, or an early-exit
    baseline's `ExitModel`, whichever the checkpoint holds."""
    cls = ExitModel if checkpoint_kind(path) == "exit" else GatedModel
    return cls.from_pretrained(path, device=device)
