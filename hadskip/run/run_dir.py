"""A run's output location (a path or a shared-storage URI) and what a restarted run needs from it.

`state.json` lists the finished points and the checkpoint to continue from, `checkpoints/` holds their
models, `results.parquet` their rows and `config.json` the run's settings. Local work is published to the
location as soon as it is complete, so nothing a restarted run needs lives only in one process's memory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from hadskip import storage
from hadskip.config import RunSettings, migrate_saved
from hadskip.core.model import GatedModel
from hadskip.errors import ConfigError
from hadskip.results.schema import new_run_id

RUN_FILES = ("results.parquet", "state.json", "config.json")  # the first two are results to protect
REPLACED_PREFIX = ".replaced-"  # hidden folder an --overwrite keeps the earlier run in until it has a row
STAGE2_CKPT = "checkpoints/stage2"  # HadSkip's gates after stage II
EXITS_CKPT = "checkpoints/exits"  # the trained model of an exit method that serves every budget


def checkpoint_rel(budget: float) -> str:
    return f"checkpoints/budget-{budget:g}"


def semantic_settings(settings: dict) -> dict:
    """Settings that change what a run computes (thread counts and batch sizes of evaluation do not); old
    key names are migrated and settings added since take the value the run computed with
    (`config.ADDED`), so a run started before a rename or a new setting still resumes, and one started
    under other defaults is refused."""
    settings = migrate_saved(settings)
    # invalid ones are compared as saved: they differ from any valid settings, and the resume is refused
    with contextlib.suppress(ValidationError):
        settings = RunSettings.model_validate(settings).model_dump(mode="json")
    return {k: v for k, v in settings.items() if k not in ("threads", "eval_batch_size", "speed_batch_size")}


@dataclass
class RunState:
    """What a restarted run needs: finished points and the checkpoint to continue from."""

    run_id: str = field(default_factory=new_run_id)
    rows: list[dict] = field(default_factory=list)
    resume_from: str | None = None  # relative checkpoint path of the last finished point
    resume_budget: float | None = None  # budget of that checkpoint (None: before stage III)
    train_seconds: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> RunState:
        return cls(**json.loads(raw))


def resume_state(run: RunDir, settings: dict) -> RunState:
    """The state to continue from in `run`, after checking the run can be continued with `settings`."""
    if not storage.exists(run.child("state.json")):
        if run.holds_results():
            raise ConfigError(
                f"{run.uri} cannot be resumed (no state.json beside results.parquet); pass --overwrite to "
                "replace it, or choose another --output"
            )
        raise ConfigError(f"--resume: nothing to resume in {run.uri} (no run was started there)")
    state = _read_saved(run, "state.json", RunState.from_json)
    saved = _read_saved(run, "config.json", json.loads)
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{run.child('config.json')} is damaged (not a settings object); the run in {run.uri} cannot be "
            "resumed (--overwrite replaces it)"
        )
    if semantic_settings(saved) != semantic_settings(settings):
        raise ConfigError(
            f"{run.uri} was started with other settings; resume with the same ones or --overwrite"
        )
    return state


def _read_saved(run: RunDir, name: str, parse):
    """A file a resumed run needs, parsed; missing or damaged is a one-line error naming it."""
    uri = run.child(name)
    if not storage.exists(uri):
        raise ConfigError(
            f"{uri} is missing; the run in {run.uri} cannot be resumed (--overwrite replaces it)"
        )
    try:
        return parse(storage.read_bytes(uri))
    except (ValueError, TypeError, UnicodeDecodeError) as err:  # truncated, not UTF-8, unknown keys
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(
            f"{uri} is damaged ({type(err).__name__}: {reason}); the run in {run.uri} cannot be resumed "
            "(--overwrite replaces it)"
        ) from None


class RunDir:
    """The output location; local work is published to it as soon as it is complete."""

    def __init__(self, uri: str):
        # Nothing is created here: a run that fails its checks, or before its first row, leaves no trace.
        self.uri = str(uri)
        self.remote = storage.is_remote(self.uri)
        self.local = (
            Path(tempfile.mkdtemp(prefix="hadskip-run-"))
            if self.remote
            else Path(storage.resolve(self.uri)[1])
        )

    def child(self, rel: str) -> str:
        return storage.join(self.uri, rel)

    def holds_results(self) -> list[str]:
        return [name for name in RUN_FILES[:2] if storage.exists(self.child(name))]

    def set_aside(self) -> str:
        """Move an earlier run's files into a hidden folder under the location and return its URI: they
        are deleted (`discard`) once the new run has its first row, or put back (`restore`) if it fails."""
        aside = self.child(f"{REPLACED_PREFIX}{uuid.uuid4().hex[:8]}")
        for name in (*RUN_FILES, "checkpoints"):
            if storage.exists(self.child(name)):
                storage.move(self.child(name), storage.join(aside, name))
        return aside

    def restore(self, aside: str) -> None:
        for name in (*RUN_FILES, "checkpoints"):
            if storage.exists(storage.join(aside, name)):
                storage.delete(self.child(name))
                storage.move(storage.join(aside, name), self.child(name))
        storage.delete(aside)

    def discard(self, aside: str) -> None:
        storage.delete(aside)

    def publish_dir(self, rel: str) -> str:
        uri = self.child(rel)
        if self.remote:
            storage.upload_dir(self.local / rel, uri)
        return uri

    def write(self, rel: str, data: bytes) -> None:
        storage.write_bytes_atomic(self.child(rel), data)

    def fetch_dir(self, rel: str) -> Path:
        if self.remote:
            return storage.download_dir(self.child(rel), self.local / rel)
        return self.local / rel

    def save_checkpoint(self, model: GatedModel, tokenizer, rel: str, meta: dict) -> str:
        """Save `model` whole under `rel` (a temp folder renamed into place), publish it, return its URI."""
        local = self.local / rel
        tmp = local.with_name(local.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(tmp, tokenizer=tokenizer, metadata=meta)
        shutil.rmtree(local, ignore_errors=True)
        tmp.rename(local)
        return self.publish_dir(rel)
