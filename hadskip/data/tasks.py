"""The GLUE task table and loading a task's splits: a local GLUE-layout folder (TSV or Parquet) or the hub.

Labels use the hub's (`nyu-mll/glue`) integer ids, so a model trained on either source means the same.
"""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hadskip.errors import ConfigError, DataError

log = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"

_NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
_NLI2 = {"entailment": 0, "not_entailment": 1}


@dataclass(frozen=True)
class TsvLayout:
    """Where the fields sit in the GLUE download's TSV files."""

    header: bool
    text_a: str | int
    text_b: str | int | None
    label: str | int
    # Fields a row must have; None: as many as the header.
    num_fields: int | None = None


@dataclass(frozen=True)
class Task:
    name: str  # canonical short name, as in the `task` results column
    glue_dir: str  # folder name in the GLUE download
    hub_config: str
    text_keys: tuple[str, str | None]  # hub column names
    num_labels: int  # 1 means regression
    metric: str  # primary metric, the one sweeps optimise
    tsv: TsvLayout
    label_map: dict[str, int] | None = None  # text labels in the TSV files
    # Dev splits as (our name, TSV/Parquet file stem, hub split). The first is primary.
    dev_splits: tuple[tuple[str, str, str], ...] = (("dev", "dev", "validation"),)
    aliases: tuple[str, ...] = field(default=())

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            "cola",
            "CoLA",
            "cola",
            ("sentence", None),
            2,
            "mcc",
            TsvLayout(header=False, text_a=3, text_b=None, label=1, num_fields=4),
        ),
        Task(
            "sst2",
            "SST-2",
            "sst2",
            ("sentence", None),
            2,
            "accuracy",
            TsvLayout(True, "sentence", None, "label"),
            aliases=("sst-2", "sst"),
        ),
        Task(
            "mrpc",
            "MRPC",
            "mrpc",
            ("sentence1", "sentence2"),
            2,
            "f1",
            TsvLayout(True, "#1 String", "#2 String", "Quality"),
        ),
        Task(
            "qqp",
            "QQP",
            "qqp",
            ("question1", "question2"),
            2,
            "f1",
            TsvLayout(True, "question1", "question2", "is_duplicate"),
        ),
        Task(
            "stsb",
            "STS-B",
            "stsb",
            ("sentence1", "sentence2"),
            1,
            "pearson",
            TsvLayout(True, "sentence1", "sentence2", "score"),
            aliases=("sts-b", "sts"),
        ),
        Task(
            "mnli",
            "MNLI",
            "mnli",
            ("premise", "hypothesis"),
            3,
            "accuracy",
            TsvLayout(True, "sentence1", "sentence2", "gold_label"),
            label_map=_NLI3,
            dev_splits=(
                ("dev", "dev_matched", "validation_matched"),
                ("dev_mm", "dev_mismatched", "validation_mismatched"),
            ),
        ),
        Task(
            "qnli",
            "QNLI",
            "qnli",
            ("question", "sentence"),
            2,
            "accuracy",
            TsvLayout(True, "question", "sentence", "label"),
            label_map=_NLI2,
        ),
        Task(
            "rte",
            "RTE",
            "rte",
            ("sentence1", "sentence2"),
            2,
            "accuracy",
            TsvLayout(True, "sentence1", "sentence2", "label"),
            label_map=_NLI2,
        ),
        Task(
            "wnli",
            "WNLI",
            "wnli",
            ("sentence1", "sentence2"),
            2,
            "accuracy",
            TsvLayout(True, "sentence1", "sentence2", "label"),
        ),
    ]
}

_ALIASES = {alias: t.name for t in TASKS.values() for alias in (t.name, t.glue_dir.lower(), *t.aliases)}


def canonical_task(name: str) -> str:
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ConfigError(f"unknown task {name!r}; accepted: {', '.join(TASKS)}")
    return _ALIASES[key]


def get_task(name: str) -> Task:
    return TASKS[canonical_task(name)]


@dataclass
class Split:
    """One split's rows: texts (second text None for single-sentence tasks) and labels."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray  # (N,) int64 class ids, or float32 scores for regression
    source: str

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, indices: np.ndarray) -> Split:
        idx = [int(i) for i in indices]
        return Split(
            [self.text_a[i] for i in idx],
            None if self.text_b is None else [self.text_b[i] for i in idx],
            self.labels[np.asarray(idx, dtype=np.int64)],
            f"{self.source} (subset of {len(idx)})",
        )


def _task_folder(task: Task, data_dir: Path) -> Path:
    """Accept the GLUE root (holding CoLA/, MRPC/, ...) or the task's own folder."""
    for candidate in (data_dir / task.glue_dir, data_dir / task.name):
        if candidate.is_dir():
            return candidate
    return data_dir


def _split_file(task: Task, split: str, data_dir: Path) -> Path:
    stems = {"train": "train", **{name: stem for name, stem, _ in task.dev_splits}}
    if split not in stems:
        raise ConfigError(f"unknown split {split!r} for {task.name}; accepted: {', '.join(stems)}")
    folder = _task_folder(task, data_dir)
    for ext in (".parquet", ".tsv"):
        path = folder / f"{stems[split]}{ext}"
        if path.is_file():
            return path
    raise DataError(
        f"data dir {str(data_dir)!r} has no {split} split for {task.name}: looked for "
        f"{folder / stems[split]}.tsv and .parquet (GLUE download layout: <dir>/{task.glue_dir}/{stems[split]}.tsv)"
    )


def _parse_label(task: Task, raw: str, where: str) -> float | int:
    raw = raw.strip()
    try:
        if task.is_regression:
            return float(raw)
        if task.label_map is not None:
            return task.label_map[raw]
        value = int(raw)
        if not 0 <= value < task.num_labels:
            raise ValueError
        return value
    except (ValueError, KeyError):
        accepted = (
            "a number"
            if task.is_regression
            else ", ".join(task.label_map)
            if task.label_map
            else ", ".join(str(i) for i in range(task.num_labels))
        )
        raise DataError(f"{where}: label {raw!r} is not one of {accepted}") from None


def _field(row: list[str], key: str | int, cols: dict[str, int]) -> str:
    return row[key] if isinstance(key, int) else row[cols[key]]


def read_tsv(task: Task, path: Path) -> Split:
    """Read a GLUE TSV with quoting off (GLUE text holds stray quotes); MRPC's BOM is dropped."""
    try:
        return _read_tsv(task, path)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); GLUE splits are UTF-8 TSV files"
        ) from None


def _read_tsv(task: Task, path: Path) -> Split:
    layout = task.tsv
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    text_a, text_b, labels = [], [], []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header: list[str] | None = None
        cols: dict[str, int] = {}
        for lineno, row in enumerate(reader, start=1):
            if layout.header and header is None:
                header = row
                cols = {name: i for i, name in enumerate(row)}
                for key in (layout.text_a, layout.text_b, layout.label):
                    if key is not None and key not in cols:
                        raise DataError(f"{path} line 1: header lacks column {key!r} (has: {', '.join(row)})")
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            want = layout.num_fields if layout.num_fields is not None else len(header or [])
            if len(row) != want:
                raise DataError(f"{path} line {lineno}: expected {want} tab-separated fields, got {len(row)}")
            where = f"{path} line {lineno}"
            labels.append(_parse_label(task, _field(row, layout.label, cols), where))
            text_a.append(_field(row, layout.text_a, cols))
            if layout.text_b is not None:
                text_b.append(_field(row, layout.text_b, cols))
    if not text_a:
        raise DataError(f"{path} holds no data rows")
    return Split(
        text_a, text_b if layout.text_b is not None else None, _labels_array(task, labels), str(path)
    )


def _labels_array(task: Task, labels: list) -> np.ndarray:
    return np.asarray(labels, dtype=np.float32 if task.is_regression else np.int64)


def _from_columns(task: Task, columns: dict[str, list], source: str) -> Split:
    key_a, key_b = task.text_keys
    missing = [k for k in (key_a, key_b, "label") if k is not None and k not in columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (has: {', '.join(columns)})")
    labels = columns["label"]
    accepted = "numbers" if task.is_regression else f"0..{task.num_labels - 1} (integers)"
    bad = [i for i, lbl in enumerate(labels) if not _numeric_label(task, lbl)]
    if bad:
        raise DataError(
            f"{source}: row {bad[0]} has label {labels[bad[0]]!r}; labels must be {accepted} "
            "(unlabelled test split, or text labels?)"
        )
    return Split(
        [str(t) for t in columns[key_a]],
        None if key_b is None else [str(t) for t in columns[key_b]],
        _labels_array(task, labels),
        source,
    )


def _numeric_label(task: Task, label: object) -> bool:
    """A class id in range (integral, not a string or a bool), or any number for regression."""
    if isinstance(label, bool) or not isinstance(label, int | float | np.integer | np.floating):
        return False
    if task.is_regression:
        return bool(np.isfinite(label))
    return float(label).is_integer() and 0 <= int(label) < task.num_labels


def read_parquet(task: Task, path: Path) -> Split:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: not a readable Parquet file ({err})".splitlines()[0]) from None
    return _from_columns(task, table.to_pydict(), str(path))


def load_from_hub(task: Task, split: str) -> Split:
    """Load a split of `nyu-mll/glue` through `datasets` (needs internet, or a warm HF cache)."""
    hub_split = "train" if split == "train" else {n: h for n, _, h in task.dev_splits}[split]
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, task.hub_config, split=hub_split)
    except Exception as err:  # noqa: BLE001 - network, auth and cache errors all end here
        raise DataError(
            f"could not load {HUB_DATASET}/{task.hub_config} split {hub_split} from the hub "
            f"({type(err).__name__}); pass --data-dir with a GLUE-layout folder to work offline"
        ) from err
    return _from_columns(task, ds.to_dict(), f"{HUB_DATASET}/{task.hub_config}:{hub_split}")


def load_split(task: str | Task, split: str, data_dir: str | Path | None = None) -> Split:
    """Load `split` ("train", "dev", or "dev_mm" for MNLI) from `data_dir` or, when None, the hub."""
    task = get_task(task) if isinstance(task, str) else task
    if data_dir is None:
        return load_from_hub(task, split)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {str(data_dir)!r} does not exist or is not a folder")
    path = _split_file(task, split, data_dir)
    return read_parquet(task, path) if path.suffix == ".parquet" else read_tsv(task, path)


def dev_split_names(task: str | Task) -> list[str]:
    task = get_task(task) if isinstance(task, str) else task
    return [name for name, _, _ in task.dev_splits]


def available_tasks(data_dir: str | Path | None) -> list[str]:
    """Tasks with both a train and a primary dev split in `data_dir` (all tasks for the hub). A task with
    only one of the two is left out with a warning that names it: it is not silently part of "all"."""
    if data_dir is None:
        return list(TASKS)
    found, partial = [], []
    for task in TASKS.values():
        has = {}
        for split in ("train", "dev"):
            try:
                _split_file(task, split, Path(data_dir))
                has[split] = True
            except DataError:
                has[split] = False
        if all(has.values()):
            found.append(task.name)
        elif any(has.values()):
            partial.append(f"{task.name} (no {'train' if not has['train'] else 'dev'} split)")
    if partial:
        log.warning("data dir %s: leaving out %s", data_dir, ", ".join(partial))
    return found


def hold_out(split: Split, rows: int, seed: int) -> tuple[Split, Split | None]:
    """(the rest, `rows` seeded random rows set aside), each in its original order; (split, None) for 0 rows.
    The held-out rows are drawn before any subsampling, so `train_limit` does not change which they are."""
    if rows == 0:
        return split, None
    if rows >= len(split):
        raise ConfigError(
            f"data.holdout_rows={rows} leaves nothing to train on: the {split.source} split has {len(split)} "
            f"rows; use at most {len(split) - 1} (or 0 to calibrate on training rows)"
        )
    order = np.random.default_rng([seed, 1]).permutation(len(split))
    return split.subset(np.sort(order[rows:])), split.subset(np.sort(order[:rows]))


def subsample(split: Split, limit: int | None, seed: int) -> Split:
    if limit is None or limit >= len(split):
        return split
    rng = np.random.default_rng(seed)
    return split.subset(np.sort(rng.choice(len(split), size=limit, replace=False)))
