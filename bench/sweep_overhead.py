"""Platform overhead: the same HadSkip training run directly (`hadskip train`) and as a one-trial Ray sweep.

Both runs use one cached stage I model (fine-tuned first, untimed), the same settings (the searched
hyperparameters fixed to the defaults, so the sweep's single trial trains exactly what `hadskip train` does)
and the same threads, and both are timed as whole processes (imports, Ray start, stage II, stage III,
calibration, evaluation, checkpoints). Prints both wall times, their ratio (goal <= 1.10) and the Ray Train
worker-group start time.

    python bench/sweep_overhead.py --task cola --budgets 4.5,3,1.5 [--set data.train_limit=2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLUE = REPO.parent / "shared" / "data" / "glue"
FIXED = [
    "stage3.lr=2e-5",
    "stage3.batch_size=32",
    "stage3.beta=50",
    "stage3.alpha_pred=1",
    "stage3.alpha_hidden=1",
    "stage3.alpha_attn=1",
    "stage3.alpha_emb=1",
]


def timed(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed (exit {done.returncode}); see {log}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cola")
    p.add_argument("--budgets", default="4.5,3,1.5")
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--data-dir", default=str(GLUE))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--work", help="scratch folder (default: a temp dir, removed afterwards)")
    args = p.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="hadskip-platform-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    sets = [x for o in [*FIXED, f"threads={args.threads}", *args.overrides] for x in ("--set", o)]
    common = ["--model", args.model, "--budgets", args.budgets, "--data-dir", args.data_dir, *sets]
    py = sys.executable

    # stage I once, untimed, into the cache both runs read
    timed(
        [
            py,
            "-m",
            "hadskip",
            "train",
            "--task",
            args.task,
            "--output",
            str(work / "warm"),
            "--cache-dir",
            str(cache),
            *common,
            "--set",
            "stage3.max_steps=1",
            "--budgets",
            args.budgets.split(",")[0],
        ],
        work / "warm.log",
    )
    direct = timed(
        [
            py,
            "-m",
            "hadskip",
            "train",
            "--task",
            args.task,
            "--output",
            str(work / "direct"),
            "--cache-dir",
            str(cache),
            *common,
        ],
        work / "direct.log",
    )
    # the sweep's stage I cache lives under --storage: point it at the same cached model
    state = work / "state"
    state.mkdir()
    (state / "stage1-cache").symlink_to(cache, target_is_directory=True)
    sweep = timed(
        [
            py,
            str(REPO / "sweeps" / "glue_sweep.py"),
            "--tasks",
            args.task,
            "--trials-per-point",
            "1",
            "--cpus-per-worker",
            str(args.threads),
            "--storage",
            str(state),
            "--results",
            str(work / "results"),
            "--name",
            "platform",
            "--keep-checkpoints",
            "all",
            *common,
        ],
        work / "sweep.log",
    )
    start_s = [
        json.loads(f.read_text())["worker_start_s"]
        for f in (state / "platform" / "runs").glob("*/timing.json")
    ]

    print(
        f"task {args.task}, budgets {args.budgets}, threads {args.threads}, settings {args.overrides or 'defaults'}"
    )
    print(f"hadskip train (direct)      {direct:8.1f} s")
    print(f"one-trial sweep (Ray)       {sweep:8.1f} s")
    print(f"ratio sweep / direct        {sweep / direct:8.3f}   (goal <= 1.10)")
    print(f"Train worker-group start    {start_s[0] if start_s else float('nan'):8.1f} s")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
