"""HadSkip's stages II and III (paper Sec. 4.3): train the gates, then walk the budget down the homotopic path
L -> ... -> s, calibrating, evaluating and publishing a point at every requested budget."""

from __future__ import annotations

import logging

import torch

from hadskip.core.inference import calibrate_threshold, predict
from hadskip.core.loop import fit
from hadskip.core.model import GatedModel
from hadskip.core.runtime import seed_everything
from hadskip.core.schedule import budget_path, step_epochs
from hadskip.core.stages import caches_teacher_logits, deployed_routes, stage2, stage3
from hadskip.run.backbone import load_gated
from hadskip.run.points import RunContext, budget_seed
from hadskip.run.run_dir import STAGE2_CKPT
from hadskip.run.task_data import calibration_kind

log = logging.getLogger(__name__)


def calibrate(ctx: RunContext, student: GatedModel, budget: float) -> None:
    """Set the student's inference threshold so deterministic routing meets `budget` on the calibration rows
    (held out from training when `data.holdout_rows` > 0, else training rows)."""
    settings = ctx.settings
    student.threshold, layers = calibrate_threshold(
        student,
        ctx.data.calibration,
        budget,
        ctx.runtime,
        rows=settings.stage3.calibration_rows,
        batch_size=settings.eval_batch_size,
        seed=settings.training_seed,
    )
    log.info(
        "budget %g: threshold %.4f gives %.2f layers on %s rows",
        budget,
        student.threshold,
        layers,
        calibration_kind(ctx.data),
    )


def train_hadskip(ctx: RunContext) -> None:
    """Stages II and III along the homotopic path, a calibrated, evaluated point at every target budget."""
    settings, data, runtime, state, run = ctx.settings, ctx.data, ctx.runtime, ctx.state, ctx.run
    remaining = ctx.remaining("hadskip")
    if not remaining:
        return
    teacher = load_gated(ctx.stage1_path, settings, runtime.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    seed_everything(
        settings.training_seed + 1
    )  # gate initialisation independent of whether stage I was cached
    student = load_gated(ctx.stage1_path, settings, runtime.device)
    runtime.broadcast_module(student)
    stage3_settings = settings.stage3
    if stage3_settings.alpha_attn > 0:
        teacher.set_attn_implementation("eager")

    if state.resume_from is not None:
        student.load_state_dict(GatedModel.from_pretrained(run.fetch_dir(state.resume_from)).state_dict())
        log.info("resuming from %s", state.resume_from)
    elif settings.stage2.enabled:
        seed_everything(settings.training_seed + 2)
        stats = fit(
            student,
            stage2(settings.stage2, settings.gates),
            data.train,
            runtime,
            seed=settings.training_seed + 2,
        )
        state.train_seconds += stats.seconds
        if ctx.save_checkpoint(student, STAGE2_CKPT, {"stage": 2}) is not None:
            state.resume_from, state.resume_budget = STAGE2_CKPT, None
            ctx.save_state()

    if stage3_settings.homotopic:
        path = budget_path(
            ctx.num_layers,
            ctx.targets,
            stage3_settings.budget_step,
            stage3_settings.low_budget_step,
            stage3_settings.low_budget_below,
        )
        stage2_weights = None
    else:  # each budget trained straight from the stage II model (paper Table 2, "w/o homotopic")
        path = list(ctx.targets)
        if state.resume_from in (None, STAGE2_CKPT):
            stage2_weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            stage2_weights = GatedModel.from_pretrained(run.fetch_dir(STAGE2_CKPT)).state_dict()

    if state.resume_budget is not None:  # the budgets down to it finished before the restart
        path = [k for k in path if k < state.resume_budget]
    # distilling predictions only: the teacher's logits on every training row once, not a forward per step
    teacher_logits = None
    if caches_teacher_logits(stage3_settings, len(data.train), len(path)):
        teacher_logits = torch.from_numpy(
            predict(teacher, data.train, runtime, settings.eval_batch_size, open_gates=True).logits
        )

    for k in path:
        if stage2_weights is not None:
            student.load_state_dict(stage2_weights)
        seed = budget_seed(settings.training_seed, k)
        seed_everything(seed)
        epochs = step_epochs(
            k,
            ctx.num_layers,
            stage3_settings.epochs,
            stage3_settings.low_budget_scale,
            stage3_settings.low_budget_below,
        )
        point_settings = stage3_settings.model_copy(update={"epochs": epochs})
        stage = stage3(point_settings, settings.gates, teacher, k, teacher_logits)
        stats = fit(student, stage, data.train, runtime, seed=seed)
        state.train_seconds += stats.seconds
        if k not in ctx.targets:
            continue
        if stage3_settings.calibrate:
            calibrate(ctx, student, k)
        if stage3_settings.route_finetune_steps:
            stats = fit(
                student, deployed_routes(stage3_settings, teacher, k), data.train, runtime, seed=seed + 1
            )
            state.train_seconds += stats.seconds
            if stage3_settings.calibrate:  # the backbone moved under the gates: meet the budget again
                calibrate(ctx, student, k)
        if ("hadskip", k) in ctx.done:
            # published before a restart that had no checkpoint to continue from (the run keeps none): the
            # path is walked again only to reach the budgets after this one, and its row stays the first one
            continue
        ctx.finish_point(
            student,
            "hadskip",
            k,
            threshold=student.threshold,
            train_seconds=state.train_seconds,
            resume_from_here=True,
        )
