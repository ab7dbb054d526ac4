"""An early-exit method's run: train it from the stage I model (one model for every budget, or one per budget
for static truncation), calibrate its exit threshold per budget on training rows, and publish each point."""

from __future__ import annotations

import logging
import math

from hadskip.baselines.exit_model import ExitModel, exit_scores
from hadskip.baselines.rules import calibrate_exit
from hadskip.baselines.static import static_layers
from hadskip.baselines.training import exit_stage, new_exit_model
from hadskip.core.loop import fit
from hadskip.core.runtime import seed_everything
from hadskip.registry import get_method
from hadskip.run.points import RunContext, budget_seed
from hadskip.run.run_dir import EXITS_CKPT
from hadskip.run.task_data import calibration_kind

log = logging.getLogger(__name__)


def train_exit_method(ctx: RunContext) -> None:
    """Train one early-exit method from the stage I model and publish a row per remaining budget."""
    settings, data, runtime, state = ctx.settings, ctx.data, ctx.runtime, ctx.state
    method = get_method(settings.method)
    exits = settings.exits
    remaining = ctx.remaining(method.name)
    if not remaining:
        return

    if method.per_budget:  # static: a model per budget, each fine-tuned from stage I
        for k in remaining:
            seed = budget_seed(settings.training_seed, k)
            seed_everything(seed)
            model = new_exit_model(ctx.stage1_path, method, exits, runtime.device)
            runtime.broadcast_module(model)
            model.static_layers = static_layers(k, model.num_layers)
            stage = exit_stage(method, exits, budget=k, name=f"static {model.static_layers} layers")
            stats = fit(model, stage, data.train, runtime, seed=seed)
            ctx.finish_point(model, method.name, k, threshold=None, train_seconds=stats.seconds)
        return

    seed_everything(settings.training_seed + 2)
    model = new_exit_model(ctx.stage1_path, method, exits, runtime.device)
    if state.resume_from == EXITS_CKPT:
        model.load_state_dict(ExitModel.from_pretrained(ctx.run.fetch_dir(EXITS_CKPT)).state_dict())
        log.info("resuming %s from %s", method.name, EXITS_CKPT)
    else:
        runtime.broadcast_module(model)
        stats = fit(model, exit_stage(method, exits), data.train, runtime, seed=settings.training_seed + 3)
        state.train_seconds += stats.seconds
        if ctx.save_checkpoint(model, EXITS_CKPT, {"method": method.name}) is not None:
            state.resume_from = EXITS_CKPT
            ctx.save_state()

    calibration = data.calibration.sample(exits.calibration_rows, settings.training_seed)
    scores = exit_scores(model, calibration, runtime, settings.eval_batch_size)
    for k in remaining:
        model.threshold, cal_layers = calibrate_exit(scores, k)
        log.info(
            "%s budget %g: threshold %.4g gives %.2f layers on %s rows",
            method.name,
            k,
            model.threshold,
            cal_layers,
            calibration_kind(data),
        )
        threshold = model.threshold if math.isfinite(model.threshold) else None
        ctx.finish_point(model, method.name, k, threshold=threshold, train_seconds=state.train_seconds)
