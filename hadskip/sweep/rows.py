"""A sweep's bookkeeping on results rows: which study and trial a row belongs to, where its point file lives,
and the rows of budgets a trial did not reach (stopped by ASHA, or failed)."""

from __future__ import annotations

from hadskip.config import check_budgets
from hadskip.registry import FULL
from hadskip.results.io import point_exists
from hadskip.results.schema import ResultRow, make_row
from hadskip.sweep.settings import SweepSettings, trial_config, trial_settings


def point_name(trial_id: str) -> str:
    """File name of a trial's point inside its <task>/budget-<b> folder: one file per (trial, budget), so a
    rewritten point replaces itself and resuming never duplicates."""
    return trial_id


def full_point_name(sweep: SweepSettings, stage1_key: str) -> str:
    """File (and trial id) of a sweep's stage I row: one per sweep and stage I model."""
    return f"{sweep.name}-stage1-{stage1_key}"


def tag(
    row: ResultRow, sweep: SweepSettings, trial_id: str, task: str, config: dict | None = None
) -> ResultRow:
    """A row with its sweep, trial and study; a confirmation trial's rows also say which search trial's
    configuration they re-train (`role` "confirm", `confirms`)."""
    study = sweep.study(task, row.method) if row.method != FULL else sweep.study(task)
    update = {"sweep_id": sweep.name, "trial_id": trial_id, "study": study}
    confirms = trial_config(config or {}).get("confirms")
    if confirms is not None and row.method != FULL:
        update.update(role="confirm", confirms=str(confirms))
    return row.model_copy(update=update)


def unfinished_rows(
    sweep: SweepSettings,
    task: str,
    config: dict,
    trial_id: str,
    num_layers: int,
    status: str,
    error: str,
    method: str = "hadskip",
) -> list[ResultRow]:
    """Rows for the budgets a trial did not reach (it failed or was stopped), unless already written."""
    settings = trial_settings(sweep, task, config, method)
    rows = []
    for budget in check_budgets(sweep.budgets, num_layers):
        row = make_row(
            settings,
            run_id=trial_id,
            method=method,
            num_layers=num_layers,
            budget=budget,
            status=status,
            error=error,
        )
        row = tag(row, sweep, trial_id, task, config)
        if not point_exists(sweep.results, row, point_name(trial_id)):
            rows.append(row)
    return rows
