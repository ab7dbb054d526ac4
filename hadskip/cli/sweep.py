"""`sweeps/glue_sweep.py`: sweep HadSkip (and the early-exit baselines) over GLUE tasks and layer budgets on Ray.

    python sweeps/glue_sweep.py --tasks all --budgets 3,6,9                 # 12-layer BERT-base
    python sweeps/glue_sweep.py --tasks cola,mrpc --budgets 4.5,3,1.5       # the default MiniLM-L6
    python sweeps/glue_sweep.py --smoke-test                                # a real sweep in minutes
    python sweeps/glue_sweep.py ... --name NAME --resume                    # continue an interrupted sweep

Without --address it starts a local Ray on this machine; --address auto joins a cluster (`ray up
cluster/config.yaml`). Results: a Parquet dataset under --results (<task>/budget-<b>/<trial>.parquet),
readable while the sweep runs; the best point per task and budget is printed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from hadskip.cli.args import parse_budgets
from hadskip.errors import HadSkipError

FLAGS = {"trials_per_task": "trials-per-point"}  # SweepSettings fields whose flag has another name


def build_parser(default_data_dir: Path | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glue_sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", help="'all' (every task the data has) or a comma list (default cola,mrpc)")
    p.add_argument("--budgets", default="4.5,3,1.5", help="expected executed layers, comma list")
    p.add_argument("--model", default="minilm-l6", help="HF hub id, local folder, or minilm-l6")
    p.add_argument(
        "--methods",
        default="hadskip",
        help="comma list: hadskip and/or the early-exit baselines "
        "static, entropy, pabee, berxit, leebert (each searched in its own study per task)",
    )
    p.add_argument(
        "--data-dir", help=f"GLUE-layout folder; default {default_data_dir} when present, else the hub"
    )
    p.add_argument(
        "--trials-per-point",
        type=int,
        default=8,
        help="Optuna trials per task (each trial walks the homotopic path once and serves every budget)",
    )
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers (DDP) per trial")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per Train worker (default 1)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster fits)")
    p.add_argument(
        "--storage",
        default="sweep-state",
        help="Tune state, trial runs and stage I cache: a path "
        "or a URI every node reaches (s3://bucket/hadskip)",
    )
    p.add_argument("--results", default="results", help="Parquet results dataset: a path or a URI")
    p.add_argument("--address", help="Ray cluster to join ('auto' on a `ray up` head node); default local")
    p.add_argument(
        "--name",
        help="sweep name (its state folder, studies and sweep_id); default glue-sweep, or with --resume the "
        "sweep last started under --storage",
    )
    p.add_argument("--resume", action="store_true", help="continue the sweep --name after an interruption")
    p.add_argument("--scheduler", choices=("asha", "fifo"), default="asha")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.25,
        help="a point is valid when mean layers <= budget + tolerance",
    )
    p.add_argument(
        "--confirm-seeds",
        type=int,
        help="re-train each task x method's best configuration per budget with N fresh seeds after its search "
        "(default 2, 1 with --smoke-test; 0: off); summaries then show mean ± std over them",
    )
    p.add_argument(
        "--curves",
        action="store_true",
        help="trace every best checkpoint's accuracy-latency curve (hadskip curve) into the results",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Tune's status table and every worker's log on the console (default: one progress line per "
        "change; worker logs in <storage>/<name>/runs/<trial>/train.log)",
    )
    p.add_argument("--keep-checkpoints", choices=("best", "all"), default="best")
    p.add_argument(
        "--speed-batch-size",
        type=int,
        default=32,
        help="measure each point's inference speed-up at this batch size (0: off)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hadskip setting for every trial (fixing a searched one removes it from the search)",
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="a real but tiny sweep: 2 tasks, 2 trials each, 256 training rows, a few steps per stage",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--test-fault", help=argparse.SUPPRESS)  # test hook, e.g. nan@1
    return p


def settings_from_args(args: argparse.Namespace, default_data_dir: Path | None = None):
    from hadskip.results.schema import new_run_id
    from hadskip.sweep.settings import SMOKE_OVERRIDES, SMOKE_TASKS, SweepSettings, last_sweep, resolve_tasks

    default = str(default_data_dir) if default_data_dir is not None and default_data_dir.is_dir() else None
    data_dir = args.data_dir or default
    overrides = list(args.overrides)
    trials, name = args.trials_per_point, args.name
    if name is None and args.resume:  # the sweep last started here (the smoke test's random name too)
        name = last_sweep(args.storage)
    tasks, cpus = args.tasks, args.cpus_per_worker
    confirm_seeds = 2 if args.confirm_seeds is None else args.confirm_seeds
    if args.smoke_test:
        confirm_seeds = 1 if args.confirm_seeds is None else args.confirm_seeds
        overrides = SMOKE_OVERRIDES + overrides
        trials = min(trials, 2)
        tasks = tasks or SMOKE_TASKS
        cpus = 0.75 if cpus is None else cpus  # with the trial's 0.25: two trials at once on 2 cores
        name = name or f"smoke-{new_run_id()[:6]}"  # a fresh sweep every time
    if trials < 1:
        raise HadSkipError(f"--trials-per-point {trials} must be at least 1")
    if confirm_seeds < 0:
        raise HadSkipError(f"--confirm-seeds {confirm_seeds} must be >= 0 (0: no confirmation runs)")
    return SweepSettings(
        name=name or "glue-sweep",
        tasks=resolve_tasks(tasks or "cola,mrpc", data_dir),
        budgets=parse_budgets(args.budgets),
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        model=args.model,
        data_dir=data_dir,
        trials_per_task=trials,
        workers_per_trial=args.workers_per_trial,
        cpus_per_worker=1.0 if cpus is None else cpus,
        gpus_per_worker=args.gpus_per_worker,
        max_concurrent=args.max_concurrent,
        storage=args.storage,
        results=args.results,
        address=args.address,
        resume=args.resume,
        tolerance=args.tolerance,
        scheduler=args.scheduler,
        overrides=overrides,
        keep_checkpoints=args.keep_checkpoints,
        test_fault=args.test_fault,
        speed_batch_size=args.speed_batch_size or None,
        confirm_seeds=confirm_seeds,
        curves=args.curves,
        verbose=args.verbose,
    )


@contextlib.contextmanager
def quiet_libraries(verbose: bool) -> Iterator[None]:
    """Without --verbose the console keeps the sweep's own progress lines only: Ray's new console output prints
    an experiment banner and a TensorBoard hint at every Tuner start even at verbosity 0 (its legacy
    reporter prints nothing at 0), Tune warns of every callback slower than 0.5 s (routine on a busy CPU),
    and Optuna logs each study it creates. Restored afterwards (the sweep may run inside another program)."""
    if verbose:
        yield
        return
    import optuna

    quiet = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_THRESHOLD_S": "30"}
    before = {k: os.environ.get(k) for k in quiet}
    level = optuna.logging.get_verbosity()
    os.environ.update(quiet)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None, default_data_dir: Path | None = None) -> int:
    args = build_parser(default_data_dir).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pydantic import ValidationError

    from hadskip.sweep.driver import format_best, run_sweep

    sweep = None
    try:
        sweep = settings_from_args(args, default_data_dir)
        with quiet_libraries(sweep.verbose):
            best = run_sweep(sweep, num_cpus=args.num_cpus)
    except HadSkipError as err:
        if args.debug:
            raise
        print(f"glue_sweep: error: {err}", file=sys.stderr)
        return 2
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        flag = FLAGS.get(field, field.replace("_", "-"))
        print(f"glue_sweep: error: --{flag} {first.get('input')!r}: {first['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        name = sweep.name if sweep is not None else args.name
        print(f"glue_sweep: interrupted; continue with --name {name} --resume", file=sys.stderr)
        return 130
    print(
        f"\nbest point per task and budget (sweep {sweep.name}; valid: mean layers <= budget + "
        f"{sweep.tolerance:g}):"
    )
    print(format_best(best))
    if sweep.confirm_seeds:
        from hadskip.results import format_summary, summary

        table, details = summary(sweep.results, tolerance=sweep.tolerance, sweep_id=sweep.name)
        print(f"\nconfirmed ({sweep.confirm_seeds} fresh seeds per best configuration):")
        print(format_summary(table, details, tolerance=sweep.tolerance))
    print(f"results: {sweep.results}  (hadskip results summary {sweep.results})")
    return 0
