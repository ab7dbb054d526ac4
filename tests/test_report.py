"""`hadskip results` on Parquet written by the real writers: summary, SQL, report files."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from hadskip.cli import main
from hadskip.results import ResultRow, write_point, write_table

LAYERS = 6


def _row(task, trial, budget, metric, layers, *, method="hadskip", status="ok", lr=1e-5, beta=10.0, **kw):
    usage = [min(1.0, layers / LAYERS)] * LAYERS
    hist = [0] * (LAYERS + 1)
    hist[min(LAYERS, round(layers))] = 100
    return ResultRow(
        run_id=trial,
        trial_id=trial,
        sweep_id="s1",
        study=f"s1-{task}",
        task=task,
        method=method,
        model="tiny",
        num_layers=LAYERS,
        budget=budget,
        metric_name="mcc" if task == "cola" else "f1",
        metric=metric if status == "ok" else None,
        mean_layers=layers,
        layer_usage=usage,
        layers_hist=hist,
        status=status,
        lr=lr,
        batch_size=16,
        beta=beta,
        alpha_pred=1.0,
        alpha_hidden=1.0,
        alpha_attn=1.0,
        alpha_emb=1.0,
        **{"seed": 42, **kw},
    )


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    rows = [
        _row("cola", "full", 6, 0.40, 6, method="full"),
        _row("cola", "t1", 3, 0.30, 3.0, lr=1e-5, beta=5),
        _row("cola", "t2", 3, 0.50, 3.9, lr=2e-5, beta=20),  # best metric but over budget: excluded
        _row("cola", "t3", 3, 0.35, 3.2, lr=3e-5, beta=40),
        _row("cola", "t4", 3, 0.90, 3.0, status="failed", lr=4e-5, beta=80),
        _row("cola", "t1", 1.5, 0.20, 1.5, lr=1e-5, beta=5),
        _row("cola", "t3", 1.5, 0.10, 1.6, lr=3e-5, beta=40),
        _row("cola", "t2", 1.5, 0.15, 1.4, lr=2e-5, beta=20),
        _row("mrpc", "full", 6, 0.88, 6, method="full"),
        _row("mrpc", "m1", 3, 0.86, 3.1),
        _row("mrpc", "m1", 1.5, 0.82, 1.5),
    ]
    for r in rows:
        write_point(str(root), r, r.trial_id)
    return root


def test_summary_picks_the_best_valid_point(results, capsys):
    from hadskip.results import summary

    table, details = summary(results)
    assert table.loc[("hadskip", 3.0), "cola"] == 0.35  # t2 over budget, t4 failed
    assert table.loc[("hadskip", 1.5), "cola"] == 0.20
    assert table.loc[("full", 6.0), "mrpc"] == 0.88
    assert table.loc[("hadskip", 3.0), "AVG"] == pytest.approx((0.35 + 0.86) / 2)
    at3 = details[(details.task == "cola") & (details.budget == 3)].iloc[0]
    assert at3.trial_id == "t3" and at3.n_invalid == 2
    retained, _ = summary(results, retention=True)
    assert retained.loc[("hadskip", 3.0), "cola"] == pytest.approx(0.35 / 0.40)

    assert main(["results", "summary", str(results)]) == 0
    out = capsys.readouterr().out
    assert "35.0 (3.20)" in out and "2 search points excluded" in out
    assert main(["results", "summary", str(results), "--format", "json", "--retention"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"full", "hadskip"}


def test_summary_reads_a_single_train_results_file(tmp_path):
    from hadskip.results import summary

    path = tmp_path / "results.parquet"
    write_table([_row("cola", "r", 6, 0.4, 6, method="full"), _row("cola", "r", 3, 0.31, 3.05)], str(path))
    table, _ = summary(path)
    assert table.loc[("hadskip", 3.0), "cola"] == 0.31


def test_query_runs_sql_over_the_results(results, capsys):
    from hadskip.results import query

    df = query(
        results,
        "SELECT task, count(*) AS n FROM results WHERE method = 'hadskip' GROUP BY task ORDER BY task",
    )
    assert df.to_dict("records") == [{"task": "cola", "n": 7}, {"task": "mrpc", "n": 2}]
    q = "SELECT trial_id, metric FROM results WHERE task='cola' AND budget=3 AND status='ok' ORDER BY metric DESC"
    assert main(["results", "query", str(results), q, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trial_id,metric", "t2,0.5", "t3,0.35", "t1,0.3"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["query", "{r}", "SELEC 1"], "SQL error:"),
        (["query", "{r}", "SELECT nope FROM results"], "SQL error:"),
        (["summary", "{missing}"], "no results at"),
        (["summary", "{r}", "--tolerance", "-1"], "--tolerance -1.0 must be >= 0"),
    ],
)
def test_bad_input_is_one_line(results, tmp_path, capsys, argv, message):
    argv = [a.format(r=results, missing=tmp_path / "nowhere") for a in argv]
    assert main(["results", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_report_writes_markdown_and_valid_pngs(results, tmp_path):
    from hadskip.results import report

    target = report(results, tmp_path / "report")
    text = target.read_text()
    pngs = sorted(p.name for p in target.parent.glob("*.png"))
    for task in ("cola", "mrpc"):
        for kind in ("metric-vs-budget", "layer-usage", "layers-hist", "pareto"):
            assert f"{task}-{kind}.png" in pngs and f"]({task}-{kind}.png)" in text
    assert "importance-s1-cola.png" in pngs  # 4 cola trials with varied lr and beta; mrpc has 1
    for name in pngs:
        image = matplotlib.image.imread(target.parent / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert "35.0 (3.20)" in text
    assert "No latency curve for cola: `hadskip curve" in text and "cola-latency.png" not in pngs


def test_pareto_front_keeps_only_undominated_points():
    import pandas as pd

    from hadskip.results.report import pareto_front

    pts = pd.DataFrame({"mean_layers": [1, 2, 2.5, 3, 4], "metric": [0.1, 0.3, 0.2, 0.5, 0.4]})
    assert pareto_front(pts).metric.tolist() == [0.1, 0.3, 0.5]


def test_importances_cover_a_baselines_own_hyperparameters(tmp_path, capfd):
    from hadskip.config import build_settings
    from hadskip.results import importances, read_results

    root = tmp_path / "results"
    for i, (head_lr, metric) in enumerate([(1e-4, 0.1), (3e-4, 0.2), (1e-3, 0.3), (3e-3, 0.4)]):
        settings = build_settings({}, ["method=pabee", f"exits.head_lr={head_lr}"]).model_dump_json()
        row = _row("cola", f"p{i}", 3, metric, 3.0, method="pabee", lr=2e-5, beta=None)
        write_point(
            str(root), row.model_copy(update={"study": "s1-cola-pabee", "settings": settings}), f"p{i}"
        )
    # three confirmation re-runs of the best configuration are not searched trials
    best = build_settings({}, ["method=pabee", "exits.head_lr=0.003"]).model_dump_json()
    for seed in (7, 8, 9):
        row = _row("cola", f"c{seed}", 3, 0.1, 3.0, method="pabee", lr=2e-5, beta=None)
        update = {"study": "s1-cola-pabee", "settings": best, "role": "confirm", "confirms": "p3"}
        write_point(str(root), row.model_copy(update=update), f"c{seed}")
    found = importances(read_results(root))
    assert set(found) == {"s1-cola-pabee"} and found["s1-cola-pabee"]["trials"] == 4
    assert set(found["s1-cola-pabee"]["importance"]) == {"exits.head_lr"}  # the only setting that varied
    assert "A new study created" not in capfd.readouterr().err  # a report is not a search


def test_confirmation_seeds_replace_the_search_maximum(results, capsys):
    from hadskip.results import summary

    for seed, metric in ((7, 0.30), (8, 0.34)):  # the best cola@3 configuration (t3), re-trained
        row = _row("cola", f"c{seed}", 3, metric, 3.1, role="confirm", confirms="t3", seed=seed)
        write_point(str(results), row, row.trial_id)
    write_point(
        str(results), _row("cola", "c9", 3, None, 3.1, role="confirm", confirms="t3", status="failed"), "c9"
    )
    table, details = summary(results)
    at3 = details[(details.task == "cola") & (details.method == "hadskip") & (details.budget == 3)].iloc[0]
    assert table.loc[("hadskip", 3.0), "cola"] == pytest.approx(0.32)
    assert at3.shown == "confirmed" and at3.n_seeds == 2 and at3.n_seeds_failed == 1
    assert at3.sd == pytest.approx(0.0283, abs=1e-4) and at3.layers == pytest.approx(3.1)
    assert at3.n_trials == 4  # the search trials, not the confirmations
    # cola@1.5 has no confirmations: its cell stays the search maximum
    assert table.loc[("hadskip", 1.5), "cola"] == pytest.approx(0.20)
    searched, _ = summary(results, search_best=True)
    assert searched.loc[("hadskip", 3.0), "cola"] == pytest.approx(0.35)

    assert main(["results", "summary", str(results)]) == 0
    out = capsys.readouterr().out
    assert "32.0±2.8 (3.10)" in out and "where the sweep ran them" in out
    assert "cola hadskip: 4 trials, 0/2 seeds" in out
    assert main(["results", "summary", str(results), "--search-best"]) == 0
    assert "maximum over searched trials" in capsys.readouterr().out


def test_a_budget_without_a_valid_point_adds_no_seed_count_nor_over_budget_mark(tmp_path, capsys):
    rows = [
        _row("sst2", "full", 6, 0.80, 6, method="full"),
        _row("sst2", "a", 3, 0.70, 3.0),
        _row("sst2", "a", 4.5, 0.77, 5.2),  # over budget: no valid point at 4.5
        *[
            _row("sst2", f"c{i}", 3, 0.70 + i / 100, 2.9, role="confirm", confirms="a", seed=i)
            for i in (1, 2, 3)
        ],
        _row("sst2", "c1", 4.5, 0.79, 5.1, role="confirm", confirms="a", seed=1),
    ]
    for r in rows:
        write_point(str(tmp_path), r, f"{r.trial_id}-{r.budget:g}")
    assert main(["results", "summary", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sst2 hadskip: 1 trials, 3 seeds" in out and "* over budget" not in out


def test_skip_score_is_zero_for_static_and_positive_for_a_better_method(tmp_path):
    from hadskip.results import skip_scores, summary

    rows = [_row("cola", "full", 6, 0.50, 6, method="full", majority_metric=0.0)]
    for method, lift in (("static", 0.0), ("entropy", 0.0), ("hadskip", 0.1)):
        rows += [
            _row("cola", f"{method}-a", 3, 0.20 + lift, 3.0, method=method),
            _row("cola", f"{method}-b", 1.5, 0.10 + lift, 1.5, method=method),
        ]
    rows.append(_row("cola", "pabee-a", 3, 0.30, 4.5, method="pabee"))  # 4.5 layers: scored at 4.5
    for r in rows:
        write_point(str(tmp_path), r, r.trial_id)
    _, details = summary(tmp_path, tolerance=2.0)
    scores = skip_scores(details).set_index("method")
    assert scores.loc["static"].skip_score == pytest.approx(0.0)
    assert scores.loc["entropy"].skip_score == pytest.approx(0.0)
    assert scores.loc["hadskip"].skip_score == pytest.approx(0.1)
    assert scores.loc["pabee"].skip_score == pytest.approx(0.30 - 0.35)  # halfway from static@3 to full@6
    assert set(scores.reference) == {"static"}

    no_static = details[details.method != "static"]
    line = skip_scores(no_static).set_index("method")  # majority 0 at 0 layers to the full 0.5 at 6
    assert line.loc["hadskip"].skip_score == pytest.approx(((0.3 - 0.25) + (0.2 - 0.125)) / 2)
    assert set(line.reference) == {"majority-to-full line"}
