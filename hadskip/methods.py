"""The early-exit baselines HadSkip is compared with (paper Table 1), as methods of the same run.

Every method starts from the same stage I fine-tune that HadSkip distils from (so differences come from
the method, not from a different fine-tuning budget), trains with the one loop in `hadskip.train` (a
`Stage` named "exit" whose loss `exit_loss` picks by method), and is evaluated at each budget with a
threshold calibrated on training rows (`hadskip.exits.calibrate_exit`), never on dev.

- static: the first k = floor(budget) layers and the model's own head; one fine-tune per budget.
- entropy (DeeBERT's two stages): the stage I model is stage one; stage two trains only the internal
  classifiers (sum of their losses); exit when the prediction's entropy is low.
- pabee: every exit trained jointly with the weighted average sum_i i L_i / sum_i i; exit when the
  predictions of consecutive exits agree `patience` times (regression: change below `patience_delta`).
- berxit: Alternating fine-tuning (odd steps: the last exit's loss; even steps: the sum over all exits)
  with the LTE module trained beside it (L_i + J_i); exit when the LTE certainty is high. Serves regression.
- leebert: mutual distillation among all exits (LAE) with learned loss weights, optimised by cross-level
  optimisation (CLO-v2: every `cycle`-th step the batch splits in halves D1, D2; the model learns from D1,
  the weights from D1 and D2); exit by patience, as in its paper.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from hadskip import losses
from hadskip.config import ExitSettings
from hadskip.errors import ConfigError
from hadskip.exits import ExitModel, calibrate_exit, exit_scores

log = logging.getLogger(__name__)

EXITS_CKPT = "checkpoints/exits"  # the trained model of a method that serves every budget


@dataclass(frozen=True)
class Method:
    name: str
    rule: str  # exit rule at inference (hadskip.exits.RULES)
    trains: str  # "all": backbone and heads; "gates": the added heads only
    regression: bool  # can serve regression tasks (STS-B)
    per_budget: bool = False  # one model per budget (static) instead of one model for all


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("static", "static", "all", regression=True, per_budget=True),
        Method("entropy", "entropy", "gates", regression=False),
        Method("pabee", "patience", "all", regression=True),
        Method("berxit", "lte", "all", regression=True),
        Method("leebert", "patience", "all", regression=False),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method {name!r} is not an early-exit method; known: {', '.join(METHODS)}")
    return METHODS[name]


def check_task(method_name: str, task) -> None:
    """A method that needs class probabilities cannot serve a regression task: say so before any work."""
    method = get_method(method_name)
    if task.is_regression and not method.regression:
        raise ConfigError(
            f"method {method.name!r} needs a classification task, and {task.name} is regression; "
            f"use one of {', '.join(m for m, s in METHODS.items() if s.regression)} or hadskip"
        )


def static_layers(budget: float, num_layers: int) -> int:
    """Layers a static model runs at a budget: floor(budget), at least 1, so it never exceeds the budget."""
    return max(1, min(num_layers, math.floor(budget + 1e-9)))


def exit_loss(stage, model: ExitModel, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """The loss terms of one early-exit training step; "total" is minimised. `stage.optim` is ExitSettings."""
    e: ExitSettings = stage.optim
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    method = stage.method
    if method == "static":
        k = static_layers(stage.budget, model.num_layers)
        logits = model(**inputs, forced_gates=model.static_pattern(labels.shape[0], labels.device, k)).logits
        task = losses.task_loss(logits, labels)
        return {"total": task, "task": task}

    out = model.exit_outputs(**inputs)
    if method == "berxit":
        # Alternating: odd iterations (step 1, 3, ...) the last exit alone, even ones every exit; the LTE
        # loss J_i rides along with each L_i. Odd steps compute nothing for the other exits, so their heads
        # get no gradient (not a zero one).
        used = [len(out.logits) - 1] if step % 2 == 0 else list(range(len(out.logits)))
        logits = [out.logits[i] for i in used]
        per_exit = losses.exit_task_losses(logits, labels)
        u = torch.stack(
            [torch.sigmoid(model.lte(out.cls[i].to(model.lte.weight.dtype))).squeeze(-1) for i in used]
        )
        j = losses.lte_losses(u, losses.lte_targets(logits, labels))
        return {"total": (per_exit + j).sum(), "last": per_exit[-1].detach(), "lte": j.mean().detach()}
    per_exit = losses.exit_task_losses(out.logits, labels)
    terms: dict[str, torch.Tensor] = {"last": per_exit[-1].detach()}
    if method == "entropy":  # stage two of DeeBERT: the internal classifiers only
        terms["total"] = per_exit[:-1].sum()
    elif method == "pabee":
        terms["total"] = losses.pabee_loss(per_exit)
    elif method == "leebert":
        ce = torch.stack([losses.per_row_task_loss(lg, labels) for lg in out.logits])  # (M, B)
        kd = losses.mutual_kd_rows(out.logits, e.kd_temperature)  # (M, M, B)
        w = losses.leebert_weights(model.loss_logits)
        batch_size = labels.shape[0]
        if (step + 1) % e.cycle == 0 and batch_size >= 2:  # CLO-v2's cross-level step
            gen = torch.Generator().manual_seed(step)
            d2 = torch.zeros(batch_size, dtype=torch.bool)
            d2[torch.randperm(batch_size, generator=gen)[: batch_size // 2]] = True
            d2 = d2.to(labels.device)
            on_d1 = losses.leebert_rows(ce, kd, w)[~d2].mean()
            # D2 teaches the weights only: its per-row terms reach the weights, not the model
            on_d2 = losses.leebert_rows(ce.detach(), kd.detach(), w)[d2].mean()
            terms["total"] = on_d1 + on_d2
        else:
            terms["total"] = losses.leebert_rows(ce, kd, w).mean()
        terms["w_last"] = w[-1, -1].detach()
    else:
        raise ConfigError(f"method {method!r} has no exit loss")
    return terms


# -- a run of one method ---------------------------------------------------------------------------------


def new_exit_model(path, settings, method: Method, device: torch.device) -> ExitModel:
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(path)
    model = ExitModel(hf, method.name, method.rule, settings.exits.head_dropout)
    model.patience_delta = settings.exits.patience_delta
    return model.to(device)


def train_exit_method(ctx) -> None:
    """Train one early-exit method from the stage I model and publish a row per remaining budget.
    `ctx` is the run's `hadskip.pipeline.RunContext`."""
    from hadskip.pipeline import (
        checkpoint_rel,
        evaluate,
        measure_point_speed,
        save_checkpoint,
        seed_everything,
    )
    from hadskip.train import Stage, fit

    settings, data, runtime, state = ctx.settings, ctx.data, ctx.runtime, ctx.state
    method = get_method(settings.method)
    e = settings.exits
    remaining = [k for k in ctx.targets if (method.name, k) not in ctx.done]
    if not remaining:
        return

    def finish(model: ExitModel, k: float, threshold: float | None, seconds: float) -> None:
        ev = evaluate(model, data, runtime, settings.eval_batch_size)
        speed = measure_point_speed(model, ctx)
        rel = checkpoint_rel(k)
        uri = None
        if ctx.save_checkpoints and runtime.is_main:
            uri = save_checkpoint(
                model, data, ctx.run, rel, {"budget": k, "metric": ev.metric, "task": data.task.name}
            )
        log.info("%s budget %g: %s %.4f, mean layers %.2f", method.name, k, data.task.metric, ev.metric,
                 ev.stats["mean_layers"])  # fmt: skip
        ctx.publish_eval(ev, method=method.name, budget=k, lr=e.lr, batch_size=e.batch_size,
                         train_seconds=seconds, checkpoint=uri, threshold=threshold, speed=speed)  # fmt: skip

    if method.per_budget:  # static: a model per budget, each fine-tuned from stage I
        for k in remaining:
            seed = settings.seed + 3 + round(k * 100)
            seed_everything(seed)
            model = new_exit_model(ctx.stage1_path, settings, method, runtime.device)
            runtime.broadcast_module(model)
            model.static_layers = static_layers(k, model.num_layers)
            label = f"static {model.static_layers} layers"
            stats = fit(model, Stage("exit", e, trains="all", budget=k, label=label, method="static"),
                        data.train, runtime, seed=seed)  # fmt: skip
            finish(model, k, None, stats.seconds)
        return

    seed_everything(settings.seed + 2)
    model = new_exit_model(ctx.stage1_path, settings, method, runtime.device)
    if state.resume_from == EXITS_CKPT:
        model.load_state_dict(ExitModel.from_pretrained(ctx.run.fetch_dir(EXITS_CKPT)).state_dict())
        log.info("resuming %s from %s", method.name, EXITS_CKPT)
    else:
        runtime.broadcast_module(model)
        seed = settings.seed + 3
        stage = Stage("exit", e, trains=method.trains, label=f"{method.name} (exits)", method=method.name)
        stats = fit(model, stage, data.train, runtime, seed=seed)
        state.train_seconds += stats.seconds
        if ctx.save_checkpoints and runtime.is_main:
            save_checkpoint(model, data, ctx.run, EXITS_CKPT, {"method": method.name})
            state.resume_from = EXITS_CKPT
            ctx.save_state()

    scores = exit_scores(
        model, data.train.sample(e.calibration_rows, settings.seed), runtime, settings.eval_batch_size
    )
    for k in remaining:
        model.threshold, cal_layers = calibrate_exit(scores, k)
        log.info("%s budget %g: threshold %.4g gives %.2f layers on training rows", method.name, k,
                 model.threshold, cal_layers)  # fmt: skip
        finish(model, k, model.threshold if math.isfinite(model.threshold) else None, state.train_seconds)
