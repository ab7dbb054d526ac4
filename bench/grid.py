"""Many `bench/methods.py` runs as parallel processes, the most important first, inside a time limit.

One job is one task and one seed with either HadSkip's defaults, the baselines, or one HadSkip variant. Every
job writes below the same --out (so `bench/methods.py --table OUT` reads them all) and shares one stage I
cache (a file lock makes the jobs of one task and seed train it once). Jobs start in tiers: HadSkip's
defaults and the baselines for every task and seed, then each variant in the order given, task by task, so
a deadline cuts the least important work. A job still running at the deadline is stopped; the budget points
it finished are kept (each run writes its results.parquet after every point). A job that finds its run
finished returns at once, so the same command continues a grid that was cut.

Made for one GPU (its small kernels leave it idle most of the time for one process) or many cores:

    python bench/grid.py --tasks mrpc,cola,sst2 --seeds 1,2,3 --baselines entropy,berxit,static \\
        --variant predkd=stage3.alpha_hidden=0,stage3.alpha_attn=0,stage3.alpha_emb=0 \\
        --parallel 14 --deadline 540 --out runs/grid -- --set-for sst2:data.train_limit=4000

Arguments after `--` go to every `bench/methods.py` call. At the end it prints the table of everything
below --out and writes `grid.json` there (each job's command, status and seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from methods import collect, format_table

METHODS = Path(__file__).with_name("methods.py")


@dataclass
class Job:
    name: str  # <tier>-<task>-s<seed>, also its log file's name
    argv: list[str]
    status: str = "waiting"  # done | failed (rc) | stopped (deadline) | skipped (deadline before its start)
    seconds: float = 0.0
    rc: int | None = None
    log: str = field(default="", repr=False)


def plan(args, passthrough: list[str]) -> list[Job]:
    """Jobs in start order: tier 0 is HadSkip's defaults then the baselines, each later tier one variant."""
    # (name, selection, seed by seed): defaults and baselines seed by seed, so the first wave trains every
    # task's and seed's stage I at once; a variant task by task, so a deadline leaves whole tasks of it done
    tiers: list[tuple[str, list[str], bool]] = [("hadskip", ["--methods", "hadskip"], True)]
    if args.baselines:
        tiers.append(("baselines", ["--methods", args.baselines], True))
    for spec in args.variant:
        name = spec.partition("=")[0]
        if not name or "=" not in spec:
            raise SystemExit(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
        tiers.append((name, ["--methods", "", "--variant", spec], False))
    tasks = args.tasks.split(",")
    seeds = args.seeds.split(",")
    jobs = []
    for tier, selection, seed_major in tiers:
        order = (
            [(t, s) for s in seeds for t in tasks] if seed_major else [(t, s) for t in tasks for s in seeds]
        )
        for task, seed in order:
            argv = [sys.executable, str(METHODS), "--tasks", task, "--seeds", seed, *selection]
            argv += ["--out", args.out, "--cache-dir", args.cache_dir or str(Path(args.out) / "cache")]
            jobs.append(Job(f"{tier}-{task}-s{seed}", argv + passthrough))
    return jobs


def run_job(
    job: Job, deadline: float | None, logs: Path, lock: threading.Lock, t0: float, min_left: float = 5.0
) -> None:
    """Run one job to its end or to the deadline; one not worth starting (under `min_left` seconds left) is
    skipped."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left < min_left:
        job.status = "skipped"
        return
    job.log = str(logs / f"{job.name}.log")
    start = time.monotonic()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(job.log, "w") as log:
        # a session of its own, so the deadline stops the job and anything it started
        proc = subprocess.Popen(
            job.argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            job.rc = proc.wait(timeout=left)
            job.status = "done" if job.rc == 0 else f"failed ({job.rc})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            job.status = "stopped"
    job.seconds = time.monotonic() - start
    with lock:
        print(
            f"[{time.monotonic() - t0:6.0f} s] {job.name:<28} {job.status:<10} {job.seconds:6.0f} s",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", required=True)
    p.add_argument("--seeds", required=True)
    p.add_argument("--baselines", default="entropy,berxit,static", help="comma list; '' for none")
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,...: one tier each")
    p.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    p.add_argument("--deadline", type=float, default=None, help="seconds from start; then stop")
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--dry-run", action="store_true", help="print the jobs and exit")
    args, rest = p.parse_known_args()
    passthrough = rest[1:] if rest[:1] == ["--"] else rest
    if args.parallel < 1:
        raise SystemExit(f"--parallel {args.parallel}: expected at least 1")
    jobs = plan(args, passthrough)
    if args.dry_run:
        for job in jobs:
            print(job.name, " ".join(repr(a) if a == "" else a for a in job.argv[1:]))
        return
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    deadline = None if args.deadline is None else t0 + args.deadline
    lock = threading.Lock()
    print(f"{len(jobs)} jobs, {args.parallel} at a time", flush=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        for job in jobs:
            pool.submit(run_job, job, deadline, logs, lock, t0)
    (out / "grid.json").write_text(json.dumps([asdict(j) for j in jobs], indent=1))
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}
    print(f"\n{time.monotonic() - t0:.0f} s: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "\n")
    try:
        print(format_table(collect([args.out]), 0.25))
    except SystemExit as e:  # nothing finished
        print(e)


if __name__ == "__main__":
    main()
