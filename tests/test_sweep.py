"""The Ray sweep on a tiny BERT and real GLUE rows: schema, failed trials, kill -9 and resume, bad arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hadskip.registry import METHODS
from hadskip.results import SCHEMA, ResultRow, best_points, read_results, write_point
from hadskip.sweep.settings import OVER_BUDGET_SCORE, SweepSettings, objective, resolve_tasks

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "sweeps" / "glue_sweep.py"

# a few steps per stage on 96 CoLA / MRPC rows: every Ray piece runs, training is a formality
TINY = [
    "--set",
    "data.train_limit=96",
    "--set",
    "data.dev_limit=64",
    "--set",
    "stage1.max_steps=3",
    "--set",
    "stage2.max_steps=2",
    "--set",
    "stage3.max_steps=2",
    "--set",
    "stage3.calibration_rows=64",
    "--set",
    "stage1.batch_size=16",
    "--set",
    "threads=1",
    "--set",
    "exits.max_steps=2",
    "--set",
    "exits.calibration_rows=64",
    "--confirm-seeds",
    "0",
]


def _load_cli():
    spec = importlib.util.spec_from_file_location("glue_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(model_dir, glue_dir, tmp_path, *extra):
    return [
        "--model",
        model_dir,
        "--data-dir",
        str(glue_dir),
        "--storage",
        str(tmp_path / "state"),
        "--results",
        str(tmp_path / "results"),
        "--num-cpus",
        "2",
        "--cpus-per-worker",
        "0.5",
        "--budgets",
        "3,1.5",
        *TINY,
        *extra,
    ]


# -- no Ray ----------------------------------------------------------------------------------------------


def test_progress_line_counts_trials_and_shows_the_best_valid_points():
    from hadskip.sweep.driver import progress_line

    line = progress_line(
        "cola hadskip", ["TERMINATED", "RUNNING", "ERROR", "PENDING"], {1.5: 0.1, 3.0: 0.25}, 61.4, 8
    )
    assert line == (
        "cola hadskip: 2/8 trials finished (1 failed), 1 running; best valid so far 3: 0.2500, 1.5: 0.1000; 61 s"
    )
    assert "best valid so far none yet" in progress_line("x", [], {}, 0, 2)


def test_objective_never_lets_an_over_budget_point_win():
    feasible = objective([(3.0, 0.40, 3.1)], tolerance=0.25)
    over = objective([(3.0, 0.95, 3.5)], tolerance=0.25)
    assert feasible == pytest.approx(0.40) and over == OVER_BUDGET_SCORE < feasible
    assert objective([(3.0, 0.4, 3.0), (1.5, None, None)], 0.25) == pytest.approx(
        (0.4 + OVER_BUDGET_SCORE) / 2
    )


def test_tasks_all_means_what_the_data_has(glue_dir):
    assert resolve_tasks("all", str(glue_dir)) == ["cola", "sst2", "mrpc"]  # QNLI has dev only here
    assert resolve_tasks("MRPC, cola", None) == ["mrpc", "cola"]
    assert len(resolve_tasks("all", None)) == 9


def test_fixed_settings_leave_the_search_space():
    sweep = SweepSettings(tasks=["cola"], budgets=[3], overrides=["stage3.beta=10", "data.train_limit=5"])
    assert "stage3.beta" not in sweep.space() and set(sweep.space()) == set(METHODS["hadskip"].space) - {
        "stage3.beta"
    }


def _row(trial, budget, metric, layers, status="ok", method="hadskip"):
    return ResultRow(
        run_id=trial,
        trial_id=trial,
        sweep_id="s",
        task="cola",
        method=method,
        model="m",
        num_layers=6,
        budget=budget,
        metric_name="mcc",
        metric=metric,
        mean_layers=layers,
        status=status,
        lr=1e-5,
        batch_size=16,
        beta=1.0,
    )


def test_best_points_skip_over_budget_and_failed_points(tmp_path):
    rows = [
        _row("a", 3, 0.30, 3.0),
        _row("b", 3, 0.90, 3.6),
        _row("c", 3, 0.95, 2.0, status="failed"),
        _row("d", 3, 0.35, 3.2),
        _row("a", 1.5, 0.10, 1.5),
        _row("f", 6, 0.5, 6.0, method="full"),
    ]
    for r in rows:
        write_point(str(tmp_path), r, f"{r.trial_id}-{r.method}")
    best = best_points(read_results(tmp_path), "s", tolerance=0.25)
    at3 = best[(best.budget == 3) & (best.method == "hadskip")].iloc[0]
    assert at3.trial_id == "d" and at3.metric == 0.35 and at3.n_points == 4 and at3.n_invalid == 2
    assert best.budget.tolist() == [6.0, 3.0, 1.5]


def test_nothing_is_confirmed_for_a_method_whose_search_left_no_rows(tmp_path):
    from hadskip.sweep.driver import confirmation_points

    write_point(str(tmp_path), _row("a", 3, 0.30, 3.0), "a-hadskip")  # hadskip has a row, static none
    sweep = SweepSettings(
        name="s", tasks=["cola"], budgets=[3.0], methods=["hadskip", "static"], results=str(tmp_path)
    )
    assert confirmation_points(sweep, "cola", "static") == []
    assert [p["confirms"] for p in confirmation_points(sweep, "cola", "hadskip")] == ["a", "a"]


def test_a_local_ray_too_small_for_one_trial_is_refused_before_stage_one(monkeypatch):
    import ray

    from hadskip.errors import ConfigError
    from hadskip.sweep.driver import check_one_trial_fits

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    sweep = SweepSettings(tasks=["cola"], budgets=[3.0])  # one worker of 1 CPU + the trial's 0.25
    with pytest.raises(ConfigError, match=r"needs 1.25 CPUs .* has 1; .* --cpus-per-worker to at most 0.75$"):
        check_one_trial_fits(sweep)
    check_one_trial_fits(sweep.model_copy(update={"cpus_per_worker": 0.75}))  # exactly fits
    check_one_trial_fits(sweep.model_copy(update={"address": "auto"}))  # a cluster may still grow
    with pytest.raises(ConfigError, match="needs 1 GPUs"):
        check_one_trial_fits(sweep.model_copy(update={"cpus_per_worker": 0.5, "gpus_per_worker": 1.0}))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--tasks", "cola", "--budgets", "3,6,9"], "budget 6 is outside (0, 4] for this 4-layer model"),
        (["--tasks", "colla"], "unknown task 'colla'"),
        (["--tasks", "cola", "--budgets", "2,x"], "--budgets '2,x' must be a comma list"),
        (["--tasks", "cola", "--trials-per-point", "0"], "--trials-per-point 0 must be at least 1"),
        (["--tasks", "cola", "--set", "stage3.bta=1"], "unknown setting 'stage3.bta'"),
        (["--tasks", "cola", "--resume"], "--resume: no sweep under"),
        (["--tasks", "cola", "--resume", "--name", "glue-sweep"], "--resume: no sweep 'glue-sweep'"),
        (["--tasks", "cola", "--name", "a b"], "--name 'a b'"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, tiny_model_dir, glue_dir, capsys, extra, message):
    cli = _load_cli()
    assert cli.main(_argv(tiny_model_dir, glue_dir, tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists()


def test_an_existing_sweep_is_not_restarted_without_resume(tmp_path, tiny_model_dir, glue_dir, capsys):
    (tmp_path / "state" / "glue-sweep").mkdir(parents=True)
    (tmp_path / "state" / "glue-sweep" / "sweep.json").write_text("{}")
    assert _load_cli().main(_argv(tiny_model_dir, glue_dir, tmp_path, "--tasks", "cola")) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "state" / "glue-sweep" / "sweep.json").read_text() == "{}"


# -- with Ray --------------------------------------------------------------------------------------------


@pytest.fixture
def ray_session():
    import ray

    yield
    ray.shutdown()


def test_smoke_sweep_writes_the_schema_and_records_a_nan_trial(
    tmp_path, tiny_model_dir, glue_dir, ray_session, capsys
):
    argv = _argv(
        tiny_model_dir,
        glue_dir,
        tmp_path,
        "--tasks",
        "cola,mrpc",
        "--budgets",
        "3,1.5",
        "--trials-per-point",
        "2",
        "--name",
        "smoke",
        "--test-fault",
        "nan@2",
    )
    sigint, air_output = signal.getsignal(signal.SIGINT), os.environ.get("RAY_AIR_NEW_OUTPUT")
    assert _load_cli().main(argv) == 0
    out = capsys.readouterr().out
    # no library's SIGINT handler is left behind in the driver (Ray Train's took three Ctrl-C to stop curves),
    # nor the console settings that kept Tune quiet
    assert signal.getsignal(signal.SIGINT) is sigint and os.environ.get("RAY_AIR_NEW_OUTPUT") == air_output

    files = sorted((tmp_path / "results").rglob("*.parquet"))
    assert all(pq.read_schema(f).equals(SCHEMA, check_metadata=False) for f in files)
    assert {f.parent.parent.name for f in files} == {"cola", "mrpc"}
    df = read_results(tmp_path / "results")
    assert (df.sweep_id == "smoke").all() and (df.git_commit.notna()).all()
    full = df[df.method == "full"]
    assert (
        sorted(full.task) == ["cola", "mrpc"] and (full.budget == 4.0).all() and (full.mean_layers == 4).all()
    )
    points = df[df.method == "hadskip"]
    assert len(points) == 2 * 2 * 2 and not points.duplicated(["task", "trial_id", "budget"]).any()
    assert set(points.study) == {"smoke-cola", "smoke-mrpc"}
    ok = points[points.status == "ok"]
    assert ok.metric.notna().all() and ((ok.mean_layers >= 0) & (ok.mean_layers <= 4)).all()
    assert ((ok.lr >= 5e-6) & (ok.lr <= 5e-5)).all() and ok.batch_size.isin([8, 16, 32, 64]).all()
    assert ok.checkpoint.notna().all()

    # trial 2 of each task had its loss forced to NaN: recorded as failed, the others finished
    failed = points[points.status == "failed"]
    assert len(failed) == 4 and failed.groupby("task").trial_id.nunique().tolist() == [1, 1]
    assert failed.error.str.contains("loss became nan").all() and failed.metric.isna().all()
    assert set(points.status) <= {"ok", "failed", "stopped"} and len(ok) >= 2

    # best table printed; pruning left at most one model per task and budget
    assert "best point per task and budget" in out and "cola" in out and "mrpc" in out
    kept = [p for p in (tmp_path / "state" / "smoke" / "runs").glob("*/checkpoints/*") if p.is_dir()]
    assert 0 < len(kept) <= 4 and not [p for p in kept if p.name == "stage2"]

    # the console shows one progress line per change; each trial's step lines are in its train.log
    assert "cola hadskip: 2/2 trials finished (1 failed), 0 running; best valid so far 3: " in out
    assert "Trial status" not in out  # Tune's table only with --verbose
    assert "Configuration for experiment" not in out and "View detailed results" not in out  # nor its banner
    logs = list((tmp_path / "state" / "smoke" / "runs").glob("*/train.log"))
    assert len(logs) == 4 and all("stage III" in p.read_text() for p in logs)


def test_baselines_run_beside_hadskip_in_their_own_studies(
    tmp_path, tiny_model_dir, glue_dir, ray_session, capsys
):
    argv = _argv(
        tiny_model_dir,
        glue_dir,
        tmp_path,
        "--tasks",
        "mrpc",
        "--methods",
        "hadskip,pabee",
        "--trials-per-point",
        "1",
        "--name",
        "both",
        "--scheduler",
        "fifo",
    )
    assert _load_cli().main(argv) == 0
    out = capsys.readouterr().out
    df = read_results(tmp_path / "results")
    points = df[df.method != "full"]
    assert sorted(points.method) == ["hadskip", "hadskip", "pabee", "pabee"] and (points.status == "ok").all()
    assert set(points.study) == {"both-mrpc", "both-mrpc-pabee"}
    pabee = points[points.method == "pabee"]
    assert ((pabee.lr >= 5e-6) & (pabee.lr <= 5e-5)).all() and pabee.beta.isna().all()
    # a search's first trial runs the defaults
    assert (points[points.method == "hadskip"].lr == 5e-5).all() and (pabee.lr == 2e-5).all()
    assert (points.batch_size == 32).all()
    assert (points[points.method == "hadskip"].beta == 50.0).all()
    assert len(df[df.method == "full"]) == 1  # one stage I for both methods
    assert "pabee" in out


def test_killed_driver_resumes_without_loss_or_duplicates(tmp_path, tiny_model_dir, glue_dir):
    argv = [
        sys.executable,
        str(SCRIPT),
        *_argv(
            tiny_model_dir,
            glue_dir,
            tmp_path,
            "--tasks",
            "cola",
            "--budgets",
            "3,1.5",
            "--trials-per-point",
            "3",
            "--name",
            "kill",
            "--scheduler",
            "fifo",
            "--max-concurrent",
            "1",
            "--confirm-seeds",
            "2",
            "--curves",
        ),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    results = tmp_path / "results" / "cola"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and len(list(results.glob("budget-3/*.parquet"))) < 1:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, like kill -9 of all
        proc.wait()
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.parquet") if "budget-4" not in str(p)}
    assert before, "no point was written before the kill"

    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    df = read_results(tmp_path / "results")
    points = df[(df.method == "hadskip") & (df.role == "search")]
    assert len(points) == 3 * 2 and not points.duplicated(["trial_id", "budget"]).any()
    assert (points.status == "ok").all() and (df.method == "full").sum() == 1
    for path, mtime in before.items():  # finished points were neither lost nor re-run
        assert path.stat().st_mtime_ns == mtime
    assert "best point per task and budget" in done.stdout
    state = json.loads((tmp_path / "state" / "kill" / "sweep.json").read_text())
    assert state["name"] == "kill"

    # after the search: each budget's best configuration re-trained with 2 fresh seeds, every budget per run
    best = best_points(df, "kill")
    best = best[(best.method == "hadskip") & best.found]
    confirm = df[df.role == "confirm"]
    assert set(confirm.confirms) == set(best.trial_id)
    assert len(confirm) == 2 * 2 * best.trial_id.nunique() and (confirm.status == "ok").all()
    assert not confirm.duplicated(["trial_id", "budget"]).any()
    assert confirm.groupby("confirms").seed.nunique().eq(2).all() and not confirm.seed.isin(points.seed).any()
    for r in confirm.itertuples():  # the searched values, re-trained
        searched = points[points.trial_id == r.confirms].iloc[0]
        assert (r.lr, r.beta, r.batch_size) == (searched.lr, searched.beta, searched.batch_size)
    assert "confirmed (2 fresh seeds" in done.stdout and "mean ± std over" in done.stdout
    # --curves: one curve per best checkpoint, marked and tagged
    curves = df[df.role == "curve"]
    assert set(curves.run_id) == {f"curve-{r.trial_id}-{r.budget:g}" for r in best.itertuples()}
    assert (curves.sweep_id == "kill").all() and curves.latency_b32_ms.notna().all()

    # resumed once more, a finished sweep writes nothing: no confirmation or curve is repeated
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.parquet")}
    again = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "results").rglob("*.parquet")} == files


class _TuneLikeTuner:
    """Stands in for a Tuner whose fit() is Ctrl-C'd: it sets up signals the way Tune 2.x does (SIGINT
    unless TUNE_DISABLE_SIGINT_HANDLER=1, always SIGUSR1, both a graceful stop) and returns normally."""

    def __init__(self):
        self.stopped_by = None

    def fit(self):
        import signal

        def stop(signum, frame):
            self.stopped_by = signal.Signals(signum).name

        if os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") != "1":
            signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGUSR1, stop)
        os.kill(os.getpid(), signal.SIGINT)  # the user's Ctrl-C while trials run
        time.sleep(0.05)
        n = 2  # every trial stopped counts as finished or errored: Tune says nothing of the interruption
        return type("Results", (), {"num_terminated": 1, "num_errors": 1, "__len__": lambda self: n})()


def test_ctrl_c_during_a_study_ends_the_sweep_after_tunes_graceful_stop():
    import signal

    from hadskip.sweep.driver import fit

    tuner = _TuneLikeTuner()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(tuner)
        assert tuner.stopped_by == "SIGUSR1"  # Tune still got its stop, and saved its state
        assert signal.getsignal(signal.SIGINT) is before[0]
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    finally:
        signal.signal(signal.SIGUSR1, before[1])


def test_a_search_starts_from_the_defaults_inside_the_searched_ranges():
    sweep = SweepSettings(tasks=["cola"], budgets=[3], overrides=["stage3.beta=10", "stage3.alpha_emb=50"])
    point = sweep.defaults_point("cola")
    # beta is fixed (not searched); alpha_emb=50 is none of its searched choices (0, 0.1, 1, 10), so Optuna
    # draws it
    assert point == {
        "stage3.lr": 5e-5,
        "stage3.batch_size": 32,
        "stage3.alpha_pred": 1.0,
        "stage3.alpha_hidden": 0.0,
        "stage3.alpha_attn": 0.0,
    }
    assert sweep.defaults_point("cola", "leebert") == {
        "exits.lr": 2e-5,
        "exits.batch_size": 32,
        "exits.head_lr": 5e-4,
        "exits.weight_lr": 1e-3,
        "exits.cycle": 4,
    }
