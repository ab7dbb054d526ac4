"""`train_run`: one run of one method on one task, end to end.

Checks the inputs, opens (or resumes) the output location, loads the task data, makes sure stage I exists
(shared through its cache), publishes the full model's row, and hands over to the method: HadSkip's walk
(`hadskip.run.hadskip_walk`) or an early-exit baseline (`hadskip.run.exit_run`). A run started again with
`resume=True` continues after the last finished point.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hadskip import storage
from hadskip.config import RunSettings, check_budgets
from hadskip.core.runtime import Runtime, pick_device
from hadskip.data.tasks import get_task
from hadskip.errors import ConfigError, OutputExistsError
from hadskip.registry import FULL, check_serves
from hadskip.results.io import write_table
from hadskip.results.schema import ResultRow
from hadskip.run.backbone import num_layers_of, resolve_model_source
from hadskip.run.exit_run import train_exit_method
from hadskip.run.hadskip_walk import train_hadskip
from hadskip.run.points import PointCallback, RunContext
from hadskip.run.run_dir import RunDir, RunState, resume_state
from hadskip.run.stage1 import default_cache_dir, ensure_stage1, full_row
from hadskip.run.task_data import load_task_data


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
    task = get_task(settings.data.task)
    check_serves(settings.method, task.name, task.is_regression)

    # Every input check (data folder and splits, tokenizer) runs before anything in `output` is touched.
    data = load_task_data(settings, source)

    problem = storage.unwritable_dir(output)
    if problem:
        raise ConfigError(f"--output {output!r} cannot hold a run: {problem}")
    run = RunDir(output)
    existing = run.holds_results()
    state = RunState()
    if resume:
        state = resume_state(run, json.loads(settings.model_dump_json()))
    elif existing and not overwrite:
        raise OutputExistsError(
            f"{output} already holds results ({', '.join(existing)}); pass --overwrite to replace them, "
            "--resume to continue, or choose another --output"
        )
    # --overwrite: the earlier run is kept aside until this one has its first row, and put back if it
    # fails before that
    aside = run.set_aside() if existing and overwrite and not resume and runtime.is_main else None
    rows = [ResultRow(**r) for r in state.rows]
    done = {(r.method, r.budget) for r in rows}
    published = False

    def publish(row: ResultRow, ckpt: Path | None) -> None:
        nonlocal aside, published
        rows.append(row)
        state.rows.append(row.model_dump(mode="json"))
        if runtime.is_main:
            if not published:  # config.json comes with the first row: a run that fails before has none
                run.write("config.json", settings.model_dump_json(indent=2).encode())
            write_table(rows, run.child("results.parquet"))
            run.write("state.json", state.to_json())
            if aside is not None:
                run.discard(aside)
                aside = None
        published = True
        if on_point is not None:
            on_point(row, ckpt)

    try:
        stage1 = ensure_stage1(settings, source, data, runtime, cache_dir)
        if (FULL, float(num_layers)) not in done:
            publish(full_row(settings, stage1.info, num_layers, run_id=state.run_id), stage1.path)
        ctx = RunContext(
            settings,
            run,
            state,
            data,
            runtime,
            stage1.path,
            targets,
            num_layers,
            done,
            publish,
            save_checkpoints,
        )
        if settings.method == "hadskip":
            train_hadskip(ctx)
        else:
            train_exit_method(ctx)
    except BaseException:
        if aside is not None:  # failed before its first row: the earlier run comes back whole
            run.restore(aside)
        raise
    runtime.barrier()
    return rows
