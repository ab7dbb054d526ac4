"""bench/grid.py: which jobs it plans in which order, and what a deadline does to a running or waiting job."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # grid.py imports its neighbour methods.py
spec = importlib.util.spec_from_file_location("bench_grid", BENCH / "grid.py")
grid = importlib.util.module_from_spec(spec)
sys.modules["bench_grid"] = grid  # its dataclass looks its module up there
spec.loader.exec_module(grid)


def _args(**kw):
    base = dict(
        tasks="mrpc,cola", seeds="1,2", baselines="entropy,static", variant=[], out="o", cache_dir=None
    )
    return argparse.Namespace(**{**base, **kw})


def _value(argv, flag):
    return argv[argv.index(flag) + 1]


def test_plan_starts_with_defaults_and_baselines_then_one_tier_per_variant():
    jobs = grid.plan(
        _args(variant=["predkd=stage3.alpha_hidden=0,stage3.alpha_emb=0"]), ["--set", "threads=1"]
    )
    assert [j.name for j in jobs] == [
        # the first tiers seed by seed, so the first wave trains every task's and seed's stage I
        "hadskip-mrpc-s1", "hadskip-cola-s1", "hadskip-mrpc-s2", "hadskip-cola-s2",
        "baselines-mrpc-s1", "baselines-cola-s1", "baselines-mrpc-s2", "baselines-cola-s2",
        # a variant task by task, so a deadline leaves whole tasks done
        "predkd-mrpc-s1", "predkd-mrpc-s2", "predkd-cola-s1", "predkd-cola-s2",
    ]  # fmt: skip
    first, baseline, variant = jobs[0].argv, jobs[4].argv, jobs[-1].argv
    assert _value(first, "--methods") == "hadskip" and _value(baseline, "--methods") == "entropy,static"
    assert _value(variant, "--methods") == "" and _value(variant, "--variant").startswith("predkd=")
    assert (_value(variant, "--tasks"), _value(variant, "--seeds")) == ("cola", "2")
    assert all(
        _value(j.argv, "--cache-dir") == str(Path("o") / "cache") for j in jobs
    )  # one stage I per task/seed
    assert all(j.argv[-2:] == ["--set", "threads=1"] for j in jobs)


def test_plan_without_baselines_and_a_bad_variant():
    assert [j.name for j in grid.plan(_args(baselines="", seeds="1"), [])] == [
        "hadskip-mrpc-s1",
        "hadskip-cola-s1",
    ]
    jobs = grid.plan(_args(baselines="", variant=["v=gates.sample=false"]), [])
    assert [j.name for j in jobs][4:] == [
        "v-mrpc-s1",
        "v-mrpc-s2",
        "v-cola-s1",
        "v-cola-s2",
    ]  # still task by task
    try:
        grid.plan(_args(variant=["predkd"]), [])
    except SystemExit as e:
        assert "predkd" in str(e) and "NAME=KEY=VALUE" in str(e)
    else:
        raise AssertionError("a variant without settings was accepted")


def _run(code: str, deadline_in: float, tmp_path: Path) -> grid.Job:
    job = grid.Job("j", [sys.executable, "-c", code])
    t0 = time.monotonic()
    grid.run_job(job, t0 + deadline_in, tmp_path, threading.Lock(), t0, min_left=0.5)
    return job


def test_a_deadline_stops_a_running_job_and_skips_a_waiting_one(tmp_path):
    stopped = _run("import time; time.sleep(60)", 1.5, tmp_path)
    assert stopped.status == "stopped" and stopped.seconds < 30
    skipped = _run("print('never')", 0.2, tmp_path)  # too little time left to start
    assert skipped.status == "skipped" and skipped.log == ""
    failed = _run("import sys; print('bad input'); sys.exit(3)", 60, tmp_path)
    assert (failed.status, failed.rc) == ("failed (3)", 3)
    assert "bad input" in Path(failed.log).read_text()
    done = _run("pass", 60, tmp_path)
    assert (done.status, done.rc) == ("done", 0)


def test_methods_runs_only_the_variants_when_no_method_is_named():
    import methods

    args = argparse.Namespace(methods="", variant=["predkd=stage3.alpha_hidden=0,stage3.alpha_emb=0"])
    assert methods.runs(args) == [
        ("hadskip[predkd]", "hadskip", ["stage3.alpha_hidden=0", "stage3.alpha_emb=0"])
    ]
    args.methods = "hadskip,static"
    assert [label for label, _, _ in methods.runs(args)] == ["hadskip", "static", "hadskip[predkd]"]
