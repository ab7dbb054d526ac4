"""HadSkip's three training stages as data (paper Sec. 4.3): each `Stage` carries its own loss.

- stage I: plain fine-tuning of the vanilla model, every layer (Eq. 4); it becomes the teacher;
- stage II: the skip gates only, everything else frozen, task loss only;
- stage III: every parameter, task loss + distillation from the teacher + the budget penalty at budget k
  (Eq. 3 with appendix B's terms), one stage per point of the homotopic path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch

from hadskip.config import GateSettings, Stage1Settings, Stage2Settings, Stage3Settings
from hadskip.core import losses
from hadskip.core.loop import Stage
from hadskip.core.model import GatedModel, GatedOutput
from hadskip.core.schedule import steps_for

Batch = dict[str, torch.Tensor]


def _inputs(batch: Batch) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("labels", "rows")}


def needs_teacher_states(settings: Stage3Settings) -> bool:
    """Whether stage III distils hidden states, attention maps or embeddings (else predictions at most, which
    can be computed once per task: `teacher_logits`)."""
    return settings.alpha_hidden > 0 or settings.alpha_attn > 0 or settings.alpha_emb > 0


def caches_teacher_logits(settings: Stage3Settings, train_rows: int, path_steps: int) -> bool:
    """Whether stage III reads the teacher's logits computed once on every training row instead of running the
    teacher on each batch: only when it distils predictions at most, and its `path_steps` homotopic steps read
    at least as many rows as that one pass costs (a run capped at a few steps runs the teacher per batch)."""
    if needs_teacher_states(settings):
        return False
    batches = steps_for(settings.epochs, math.ceil(train_rows / settings.batch_size), settings.max_steps)
    return path_steps * batches * settings.batch_size >= train_rows


def stage1_loss(model: GatedModel, batch: Batch, step: int) -> dict[str, torch.Tensor]:
    """Eq. 4: the vanilla model, every layer."""
    task = losses.task_loss(model(**_inputs(batch), open_gates=True).logits, batch["labels"])
    return {"total": task, "task": task}


def _gate_forward(gates: GateSettings, model: GatedModel, batch: Batch, **record: bool):
    """The student's training forward pass with the gates' decision settings."""
    return model(
        **_inputs(batch),
        **record,
        tau=gates.tau,
        sample=gates.sample,
        estimator=gates.estimator,
        detach_gate_input=gates.detach_input,
    )


def _policy_term(
    gates: GateSettings,
    row_losses: torch.Tensor,
    out: GatedOutput,
    model: GatedModel,
    batch: Batch,
    row_cost: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor | float:
    """Under the score-function estimator, its surrogate (value 0) through which `row_losses` move the gates;
    under ReinMax nothing (the task's gradient reaches the gates through the decisions themselves).

    `row_cost` maps logits to the per-row loss `row_losses` was computed with; with `gates.baseline="greedy"`
    it scores each row on the route its gates take deterministically (p(run) > 0.5), as the baseline; with
    "pair" on a second sampled route, and both routes' decisions learn from the difference."""
    if gates.estimator != "reinforce":
        return 0.0
    normalize = gates.advantage_norm == "rms"
    if gates.baseline == "pair":
        other = _gate_forward(gates, model, batch)
        with torch.no_grad():
            other_losses = row_cost(other.logits)
        return losses.paired_score_function_surrogate(
            row_losses, out.gates, out.probs, other_losses, other.gates, other.probs, normalize
        )
    baseline = None
    if gates.baseline == "greedy":
        with torch.no_grad(), model.eval_mode():
            baseline = row_cost(model(**_inputs(batch), threshold=0.5).logits)
    return losses.score_function_surrogate(row_losses, out.gates, out.probs, baseline, normalize)


def _exploration_bonus(
    gates: GateSettings, out: GatedOutput, terms: dict[str, torch.Tensor]
) -> torch.Tensor | float:
    """`gates.entropy_bonus` times the routes' entropy, to subtract from the loss; records the entropy (how
    undecided the routes still are) in `terms`. Nothing when the pass recorded no p(run) (eval mode)."""
    if out.probs is None:
        return 0.0
    entropy = losses.route_entropy(out.probs if gates.entropy_bonus else out.probs.detach())
    terms["entropy"] = entropy.detach()
    return gates.entropy_bonus * entropy


def stage2_loss(gates: GateSettings, model: GatedModel, batch: Batch, step: int) -> dict[str, torch.Tensor]:
    """The gates alone learn to serve the task (no budget yet)."""
    out = _gate_forward(gates, model, batch)
    row_cost = partial(losses.per_row_task_loss, labels=batch["labels"])
    rows = row_cost(out.logits)
    task = rows.mean()
    terms = {"task": task, "layers": out.gates.detach().sum(1).mean()}
    policy = _policy_term(gates, rows, out, model, batch, row_cost)
    terms["total"] = task + policy - _exploration_bonus(gates, out, terms)
    return terms


def stage3_loss(
    settings: Stage3Settings,
    gates: GateSettings,
    teacher: GatedModel,
    budget: float,
    teacher_logits: torch.Tensor | None,
    model: GatedModel,
    batch: Batch,
    step: int,
) -> dict[str, torch.Tensor]:
    """Eq. 3: task + alpha-weighted distillation from the teacher + beta * the budget penalty at k = budget.

    `teacher_logits` (N, C), the teacher's predictions on every training row computed once, replace the
    teacher's forward pass when only predictions are distilled (the batch then carries its `rows`)."""
    inputs, labels = _inputs(batch), batch["labels"]
    need_hidden = settings.alpha_hidden > 0 or settings.alpha_emb > 0
    need_attn = settings.alpha_attn > 0
    if teacher_logits is not None:
        t_logits = teacher_logits[batch["rows"]].to(labels.device)
    else:
        with torch.no_grad():
            t = teacher(**inputs, open_gates=True, record_hidden=need_hidden, record_attn=need_attn)
        t_logits = t.logits
    out = _gate_forward(gates, model, batch, record_hidden=need_hidden, record_attn=need_attn)
    mask = batch["attention_mask"]

    def row_terms(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,) task loss and prediction distillation of each row."""
        terms = {"task": losses.per_row_task_loss(logits, labels)}
        if settings.alpha_pred > 0:
            terms["kd_pred"] = losses.per_row_prediction_kd(logits, t_logits, settings.kd_temperature)
        return terms

    def cost(per_row: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) what each row's route cost: task + weighted prediction distillation (the score-function
        estimator's signal; the feature terms are per-batch averages, and off by default)."""
        return per_row["task"] + settings.alpha_pred * per_row.get("kd_pred", 0.0)

    per_row = row_terms(out.logits)
    terms = {name: values.mean() for name, values in per_row.items()}
    if settings.alpha_hidden > 0:
        terms["kd_hidden"] = losses.hidden_kd(out.trace.hidden, t.trace.hidden, mask)
    if need_attn:
        terms["kd_attn"] = losses.attention_kd(out.trace.attentions, t.trace.attentions, mask)
    if settings.alpha_emb > 0:
        terms["kd_emb"] = losses.embedding_kd(out.trace.embeddings, t.trace.embeddings, mask)
    # the sampled gate values the forward pass used, or the expected usage p(run) (recorded in training too)
    usage = out.probs if settings.budget_target == "expected" else out.gates
    terms["budget"] = losses.budget_penalty(usage, budget, model.num_layers, settings.budget_loss)
    weights = {
        "task": 1.0,
        "kd_pred": settings.alpha_pred,
        "kd_hidden": settings.alpha_hidden,
        "kd_attn": settings.alpha_attn,
        "kd_emb": settings.alpha_emb,
        "budget": settings.beta,
    }
    policy = _policy_term(gates, cost(per_row), out, model, batch, lambda lg: cost(row_terms(lg)))
    weighted = sum(weights[k] * v for k, v in terms.items())
    terms["total"] = weighted + policy - _exploration_bonus(gates, out, terms)
    terms["layers"] = out.gates.detach().sum(1).mean()
    return terms


def deployed_routes_loss(
    settings: Stage3Settings, teacher: GatedModel, model: GatedModel, batch: Batch, step: int
) -> dict[str, torch.Tensor]:
    """Task + prediction distillation on the routes the deployed model takes: each batch's decisions come from
    the gates at the calibrated threshold (no gradient), and the layers run on exactly those routes."""
    inputs, labels = _inputs(batch), batch["labels"]
    with torch.no_grad():
        with model.eval_mode():
            routes = model(**inputs).gates.bool()  # (B, L) at model.threshold
        t = teacher(**inputs, open_gates=True)
    out = model(**inputs, forced_gates=routes)
    terms = {"task": losses.task_loss(out.logits, labels)}
    terms["kd_pred"] = losses.prediction_kd(out.logits, t.logits, settings.kd_temperature)
    terms["total"] = terms["task"] + settings.alpha_pred * terms["kd_pred"]
    terms["layers"] = routes.float().sum(1).mean()
    return terms


def stage1(settings: Stage1Settings, name: str = "stage I (fine-tune)") -> Stage:
    return Stage(name, settings, trains="backbone", loss=stage1_loss, kind="stage1")


def stage2(settings: Stage2Settings, gates: GateSettings) -> Stage:
    return Stage(
        "stage II (gates)", settings, trains="added", loss=partial(stage2_loss, gates), kind="stage2"
    )


def stage3(
    settings: Stage3Settings,
    gates: GateSettings,
    teacher: GatedModel,
    budget: float,
    teacher_logits: torch.Tensor | None = None,
) -> Stage:
    """One point of the homotopic path; `teacher_logits` from `needs_teacher_states(settings) is False` runs."""
    if teacher_logits is not None and needs_teacher_states(settings):
        raise ValueError(
            "cached teacher logits cannot serve hidden-state, attention or embedding distillation"
        )
    return Stage(
        f"stage III k={budget:g}",
        settings,
        trains="all",
        loss=partial(stage3_loss, settings, gates, teacher, budget, teacher_logits),
        with_rows=teacher_logits is not None,
        added_lr=settings.gate_lr,
        attn_implementation="eager" if settings.alpha_attn > 0 else None,
        dropout=settings.student_dropout,
        kind="stage3",
        budget=budget,
    )


def deployed_routes(settings: Stage3Settings, teacher: GatedModel, budget: float) -> Stage:
    """`route_finetune_steps` of the backbone on the calibrated routes at one budget (gates stay fixed)."""
    optim = settings.model_copy(update={"max_steps": settings.route_finetune_steps})
    return Stage(
        f"deployed routes k={budget:g}",
        optim,
        trains="backbone",
        loss=partial(deployed_routes_loss, settings, teacher),
        attn_implementation="sdpa",
        dropout=settings.student_dropout,
        kind="routes",
        budget=budget,
    )
