"""A task's data, tokenised once per run, and the dev evaluation every point of a run gets."""

from __future__ import annotations

from dataclasses import dataclass

from hadskip.config import RunSettings
from hadskip.core.inference import predict
from hadskip.core.model import GatedModel
from hadskip.core.runtime import Runtime
from hadskip.data.encoding import Encoded, encode
from hadskip.data.metrics import layer_stats, majority_score, predictions, task_metrics
from hadskip.data.tasks import Task, dev_split_names, get_task, hold_out, load_split, subsample
from hadskip.run.backbone import load_tokenizer


@dataclass
class TaskData:
    task: Task
    tokenizer: object
    train: Encoded
    dev: dict[str, Encoded]  # split name -> data; "dev" first
    majority: float
    calibration: Encoded  # where budget thresholds are calibrated: the held-out rows, else `train`


def load_task_data(settings: RunSettings, source: str) -> TaskData:
    task = get_task(settings.data.task)
    tokenizer = load_tokenizer(source)
    d = settings.data
    train, held_out = hold_out(load_split(task, "train", d.data_dir), d.holdout_rows, settings.seed)
    train = subsample(train, d.train_limit, settings.seed)
    devs = {
        name: subsample(load_split(task, name, d.data_dir), d.dev_limit, settings.seed)
        for name in dev_split_names(task)
    }
    encoded_train = encode(train, tokenizer, d.max_length)
    return TaskData(
        task=task,
        tokenizer=tokenizer,
        train=encoded_train,
        dev={name: encode(split, tokenizer, d.max_length) for name, split in devs.items()},
        majority=majority_score(task, train.labels, devs["dev"].labels),
        calibration=encoded_train if held_out is None else encode(held_out, tokenizer, d.max_length),
    )


def calibration_kind(data: TaskData) -> str:
    """How log lines name the rows thresholds are calibrated on."""
    return "training" if data.calibration is data.train else "held-out"


@dataclass
class Evaluation:
    metric: float
    metrics: dict[str, float]
    stats: dict  # mean_layers, layer_usage, layers_hist on the primary dev split
    seconds: float


def evaluate(
    model: GatedModel,
    data: TaskData,
    runtime: Runtime,
    batch_size: int,
    *,
    open_gates: bool = False,
    threshold: float | None = None,
) -> Evaluation:
    """Dev metrics (every dev split) and skip statistics on the primary dev split, deterministic gates (at
    the model's own threshold unless `threshold` is given)."""
    metrics: dict[str, float] = {}
    stats: dict = {}
    seconds = 0.0
    for name, enc in data.dev.items():
        out = predict(model, enc, runtime, batch_size, open_gates=open_gates, threshold=threshold)
        seconds += out.seconds
        suffix = "" if name == "dev" else name[len("dev") :]
        metrics.update(task_metrics(data.task, predictions(data.task, out.logits), enc.labels, suffix=suffix))
        if name == "dev":
            stats = layer_stats(out.executed)
    return Evaluation(metrics[data.task.metric], metrics, stats, seconds)
