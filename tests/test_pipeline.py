"""`hadskip train` end to end on a tiny BERT and real CoLA rows: results, checkpoints, cache, resume."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from hadskip.checkpoint import load
from hadskip.cli import main
from hadskip.config import build_settings
from hadskip.errors import ConfigError, OutputExistsError
from hadskip.results import SCHEMA, SCHEMA_VERSION, read_results
from hadskip.run.train import train_run

FAST = [
    "--set",
    "data.train_limit=96",
    "--set",
    "data.dev_limit=64",
    "--set",
    "stage1.max_steps=4",
    "--set",
    "stage2.max_steps=2",
    "--set",
    "stage3.max_steps=2",
    "--set",
    "stage3.calibration_rows=64",
    "--set",
    "stage1.batch_size=16",
    "--set",
    "stage3.batch_size=16",
    "--set",
    "stage2.batch_size=16",
    "-q",
]


def _argv(model_dir, glue_dir, out, cache, *extra):
    args = [
        "train",
        "--task",
        "cola",
        "--model",
        model_dir,
        "--budgets",
        "3,1.5",
        "--output",
        str(out),
        "--data-dir",
        str(glue_dir),
        "--cache-dir",
        str(cache),
        *FAST[:-1],
        *extra,
    ]
    return ["-q", *args]


def test_train_writes_results_checkpoints_and_reuses_stage1(
    tmp_path, tiny_model_dir, glue_dir, count_fits, capsys
):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_argv(tiny_model_dir, glue_dir, out, cache)) == 0
    assert [c[0] for c in count_fits] == ["stage1", "stage2"] + ["stage3"] * 4  # path 4, 3, 2, 1.5
    assert [c[1] for c in count_fits[2:]] == [4, 3, 2, 1.5]

    table = pq.read_table(out / "results.parquet")
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.schema.metadata[b"hadskip_schema_version"] == str(SCHEMA_VERSION).encode()
    df = read_results(out / "results.parquet")
    assert df["method"].tolist() == ["full", "hadskip", "hadskip"]
    assert df["budget"].tolist() == [4.0, 3.0, 1.5]
    assert (
        (df["task"] == "cola").all() and (df["metric_name"] == "mcc").all() and (df["status"] == "ok").all()
    )
    for _, row in df.iterrows():
        assert len(row.layer_usage) == 4 and len(row.layers_hist) == 5 and sum(row.layers_hist) == 64
        assert row.mean_layers == pytest.approx(sum(i * n for i, n in enumerate(row.layers_hist)) / 64)
        assert set(json.loads(row.metrics)) == {"mcc"} and -1 <= row.metric <= 1
        assert row.run_id == df.run_id[0] and row.seed == 42
        # stage III's loss weights belong to HadSkip's rows; the stage I model's row has none
        assert row.beta == 50.0 if row.method == "hadskip" else math.isnan(row.beta)
    assert df.mean_layers[0] == 4.0
    assert abs(df.mean_layers[1] - 3.0) <= 1.0 and abs(df.mean_layers[2] - 1.5) <= 1.0
    assert df.train_seconds[2] > df.train_seconds[1] > 0

    model = load(df.checkpoint[2])  # a budget checkpoint loads in one call and predicts on raw text
    pred = model.predict(["The cat sat on the mat.", "Cat the mat on sat."])
    assert len(pred["prediction"]) == 2 and all(len(layers) <= 4 for layers in pred["layers"])
    assert model.threshold == pytest.approx(df.gate_threshold[2])

    # same stage I settings in another run: the cached stage I model is reused
    count_fits.clear()
    assert main(_argv(tiny_model_dir, glue_dir, tmp_path / "run2", cache, "--no-checkpoints")) == 0
    assert [c[0] for c in count_fits] == ["stage2"] + ["stage3"] * 4
    first = read_results(out / "results.parquet")
    second = read_results(tmp_path / "run2" / "results.parquet")
    assert second.metric[0] == first.metric[0] and second.checkpoint.isna().all()
    assert "stage1" not in capsys.readouterr().err


def test_existing_output_is_not_overwritten(tmp_path, tiny_model_dir, glue_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.parquet").write_bytes(b"precious")
    code = main(_argv(tiny_model_dir, glue_dir, out, tmp_path / "cache"))
    err = capsys.readouterr().err
    assert code == 2 and "already holds results (results.parquet); pass --overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "results.parquet").read_bytes() == b"precious"


def _cola_two_budgets(model_dir, glue_dir):
    return build_settings(
        {"model": {"name_or_path": model_dir}, "data": {"task": "cola", "data_dir": str(glue_dir)}},
        [a for a in FAST if "=" in a] + ["budgets=[3, 1.5]"],
    )


def stop_after_first_budget(row, ckpt):
    if row.method == "hadskip":
        raise KeyboardInterrupt


def test_interrupted_run_resumes_without_loss_or_repeats(
    tmp_path, tiny_model_dir, glue_dir, count_fits, monkeypatch
):
    out, cache = tmp_path / "run", tmp_path / "cache"
    settings = _cola_two_budgets(tiny_model_dir, glue_dir)
    with pytest.raises(KeyboardInterrupt):
        train_run(settings, str(out), cache_dir=str(cache), on_point=stop_after_first_budget)
    assert read_results(out / "results.parquet")["budget"].tolist() == [4.0, 3.0]
    count_fits.clear()
    with pytest.raises(OutputExistsError, match="already holds results"):
        train_run(settings, str(out), cache_dir=str(cache))
    rows = train_run(settings, str(out), cache_dir=str(cache), resume=True)
    assert count_fits == [("stage3", 2.0), ("stage3", 1.5)]  # continues after budget 3's checkpoint
    df = read_results(out / "results.parquet")
    assert df["budget"].tolist() == [4.0, 3.0, 1.5] and [r.budget for r in rows] == [4.0, 3.0, 1.5]
    count_fits.clear()
    train_run(settings, str(out), cache_dir=str(cache), resume=True)  # nothing left to do
    assert count_fits == [] and len(read_results(out / "results.parquet")) == 3
    other = settings.model_copy(update={"seed": 7})
    with pytest.raises(ConfigError, match="started with other settings"):
        train_run(other, str(out), cache_dir=str(cache), resume=True)


def test_a_run_without_checkpoints_resumes_by_walking_again_without_repeating_a_row(
    tmp_path, tiny_model_dir, glue_dir, count_fits
):
    out, cache = tmp_path / "run", tmp_path / "cache"
    settings = _cola_two_budgets(tiny_model_dir, glue_dir)
    with pytest.raises(KeyboardInterrupt):
        train_run(
            settings, str(out), cache_dir=str(cache), on_point=stop_after_first_budget, save_checkpoints=False
        )
    first = read_results(out / "results.parquet")
    count_fits.clear()
    train_run(settings, str(out), cache_dir=str(cache), resume=True, save_checkpoints=False)
    # nothing to continue from: stage II and the path again from the top, budget 3 not published twice
    assert [f for f in count_fits if f[0] == "stage3"] == [("stage3", k) for k in (4.0, 3.0, 2.0, 1.5)]
    df = read_results(out / "results.parquet")
    assert df["budget"].tolist() == [4.0, 3.0, 1.5]
    assert df.metric[1] == first.metric[1]  # the row published before the restart is the one kept


def test_non_homotopic_ablation_trains_each_budget_from_stage2(
    tmp_path, tiny_model_dir, glue_dir, count_fits
):
    out = tmp_path / "run"
    argv = _argv(
        tiny_model_dir,
        glue_dir,
        out,
        tmp_path / "cache",
        "--set",
        "stage3.homotopic=false",
        "--set",
        "stage2.enabled=false",
        "--set",
        "stage3.alpha_attn=0",
    )
    assert main(argv) == 0
    assert count_fits == [("stage1", None), ("stage3", 3.0), ("stage3", 1.5)]


def test_deployed_route_finetuning_follows_each_requested_budget(
    tmp_path, tiny_model_dir, glue_dir, count_fits
):
    extra = ["--set", "stage3.route_finetune_steps=2", "--set", "stage3.student_dropout=false"]
    # prediction distillation only: the teacher's logits are computed once, each batch carries its rows
    extra += ["--set", "stage3.alpha_hidden=0", "--set", "stage3.alpha_attn=0", "--set", "stage3.alpha_emb=0"]
    assert main(_argv(tiny_model_dir, glue_dir, tmp_path / "run", tmp_path / "cache", *extra)) == 0
    # path 4, 3, 2, 1.5: a fine-tune on the deployed routes after each requested budget only
    assert count_fits[2:] == [
        ("stage3", 4),
        ("stage3", 3),
        ("routes", 3),
        ("stage3", 2),
        ("stage3", 1.5),
        ("routes", 1.5),
    ]
    df = read_results(tmp_path / "run" / "results.parquet")
    assert (df[df.method == "hadskip"].mean_layers - df[df.method == "hadskip"].budget).abs().max() < 1.0


def test_low_budget_scale_lengthens_only_the_homotopic_steps_below_the_threshold(
    tmp_path, tiny_model_dir, glue_dir, monkeypatch
):
    import hadskip.run.hadskip_walk as walk

    steps, real = [], walk.fit

    def recording(model, stage, *a, **kw):
        stats = real(model, stage, *a, **kw)
        if stage.kind == "stage3":
            steps.append((stage.budget, stats.steps))
        return stats

    monkeypatch.setattr(walk, "fit", recording)
    extra = ["--set", "stage3.max_steps=null", "--set", "stage3.low_budget_scale=2"]
    assert main(_argv(tiny_model_dir, glue_dir, tmp_path / "run", tmp_path / "cache", *extra)) == 0
    # 4 layers, threshold 0.5: only 1.5 is below 2 layers; 2 itself keeps one epoch
    one_epoch = steps[0][1]
    assert steps == [(4, one_epoch), (3, one_epoch), (2, one_epoch), (1.5, 2 * one_epoch)]
    assert one_epoch > 2


def test_the_path_below_the_low_budget_threshold_takes_its_own_step(
    tmp_path, tiny_model_dir, glue_dir, count_fits
):
    steps = ["stage3.budget_step=0.5", "stage3.low_budget_step=1", "stage3.low_budget_below=0.75"]
    extra = [a for s in steps for a in ("--set", s)]
    assert main(_argv(tiny_model_dir, glue_dir, tmp_path / "run", tmp_path / "cache", *extra)) == 0
    # 4 layers: half-layer steps down to 3 layers, then whole layers (one step throughout: 2.5 as well)
    walked = [k for kind, k in count_fits if kind == "stage3"]
    assert walked == [4, 3.5, 3, 2, 1.5]
    assert read_results(tmp_path / "run" / "results.parquet")["budget"].tolist() == [4.0, 3.0, 1.5]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--budgets", "3,6,9"], "budget 9 is outside (0, 4] for this 4-layer model"),
        (["--budgets", "3,x"], "--budgets '3,x' must be a comma list"),
        (["--set", "stage3.bta=1"], "unknown setting 'stage3.bta'"),
        (["--set", "stage3.beta=abc"], "setting stage3.beta='abc' is invalid"),
        (["--set", "stage3.low_budget_below=0"], "setting stage3.low_budget_below=0 is invalid"),
        (["--task", "glue"], "unknown task 'glue'"),
        (["--set", "data.holdout_rows=100000"], "data.holdout_rows=100000 leaves nothing to train on"),
        (["--model", "/nonexistent/model"], "cannot load model '/nonexistent/model'"),
    ],
)
def test_bad_input_gives_one_line_errors(tmp_path, tiny_model_dir, glue_dir, capsys, extra, message):
    code = main(_argv(tiny_model_dir, glue_dir, tmp_path / "run", tmp_path / "cache", *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "results.parquet").exists()


def test_overwrite_clears_the_previous_run(tmp_path, tiny_model_dir, glue_dir):
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert main(_argv(tiny_model_dir, glue_dir, out, cache)) == 0
    assert (out / "checkpoints" / "budget-1.5").is_dir()
    assert main(_argv(tiny_model_dir, glue_dir, out, cache, "--budgets", "2", "--overwrite")) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["budget-2", "stage2"]
    assert read_results(out / "results.parquet")["budget"].tolist() == [4.0, 2.0]


def test_stage1_cache_keys_survive_settings_added_since_cache_version_1(tiny_model_dir):
    import hashlib

    from hadskip.run.stage1 import stage1_key

    settings = build_settings({"data": {"task": "cola"}}, [])
    d = settings.data
    v1 = {  # what a version-1 entry was keyed by, before stage I settings gained `clip`
        "version": 1,
        "model": {"hub": "some/model"},
        "task": d.task,
        "data": {"data_dir": None, "max_length": d.max_length, "train_limit": d.train_limit},
        "stage1": {k: v for k, v in settings.stage1.model_dump().items() if k != "clip"},
        "hidden_dropout": None,
        "seed": settings.seed,
    }
    digest = hashlib.sha256(json.dumps(v1, sort_keys=True).encode()).hexdigest()[:16]
    assert stage1_key(settings, "some/model") == f"cola-{digest}"
    other = build_settings({"data": {"task": "cola"}}, ["stage1.clip=per_group"])
    assert stage1_key(other, "some/model") != f"cola-{digest}"  # a new value is a new model
    held = build_settings({"data": {"task": "cola"}}, ["data.holdout_rows=64"])
    assert stage1_key(held, "some/model") != f"cola-{digest}"  # stage I trains on fewer rows


def test_held_out_rows_calibrate_every_method_and_never_train(
    tmp_path, tiny_model_dir, glue_dir, monkeypatch
):
    import hadskip.run.exit_run
    import hadskip.run.hadskip_walk
    import hadskip.run.stage1

    seen = {"fit": [], "calibrate": []}
    for module in (hadskip.run.stage1, hadskip.run.hadskip_walk, hadskip.run.exit_run):
        real_fit = module.fit

        def fit(model, stage, data, *a, _real=real_fit, **kw):
            seen["fit"].append(data)
            return _real(model, stage, data, *a, **kw)

        monkeypatch.setattr(module, "fit", fit)
    real_cal, real_scores = hadskip.run.hadskip_walk.calibrate_threshold, hadskip.run.exit_run.exit_scores

    def calibrate_threshold(model, data, *a, **kw):
        seen["calibrate"].append(data.sample(kw["rows"], kw["seed"]))
        return real_cal(model, data, *a, **kw)

    def exit_scores(model, data, *a, **kw):
        seen["calibrate"].append(data)
        return real_scores(model, data, *a, **kw)

    monkeypatch.setattr(hadskip.run.hadskip_walk, "calibrate_threshold", calibrate_threshold)
    monkeypatch.setattr(hadskip.run.exit_run, "exit_scores", exit_scores)
    cache, held = tmp_path / "cache", ["--set", "data.holdout_rows=40"]
    for method in ("hadskip", "entropy"):
        argv = _argv(tiny_model_dir, glue_dir, tmp_path / method, cache, "--method", method, *held)
        assert main(argv) == 0
    rows = lambda enc: {tuple(ids) for ids in enc.input_ids}  # noqa: E731
    trained = set().union(*(rows(d) for d in seen["fit"]))
    assert all(len(d) == 96 for d in seen["fit"])  # train_limit still counts training rows
    assert len(seen["calibrate"]) == 3  # HadSkip at each of its two budgets, entropy once for both
    for cal in seen["calibrate"]:
        assert len(cal) == 40 and not rows(cal) & trained
    # without a holdout, thresholds are calibrated on training rows, as before
    seen["calibrate"].clear()
    assert main(_argv(tiny_model_dir, glue_dir, tmp_path / "plain", cache, "--method", "entropy")) == 0
    assert rows(seen["calibrate"][0]) <= set().union(*(rows(d) for d in seen["fit"][-2:]))
