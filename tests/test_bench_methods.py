"""bench/methods.py's comparison table: unpaired spread and the paired per-seed view."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

spec = importlib.util.spec_from_file_location(
    "bench_methods", Path(__file__).resolve().parents[1] / "bench" / "methods.py"
)
methods = importlib.util.module_from_spec(spec)
spec.loader.exec_module(methods)


def _rows(label, budget, metrics, *, method=None, layers=None):
    return [
        {
            "task": "cola",
            "label": label,
            "method": method or label.split("[")[0],
            "budget": budget,
            "seed": seed,
            "metric": m,
            "mean_layers": layers if layers is not None else budget,
            "majority_metric": 0.0,
            "train_seconds": 1.0,
        }
        for seed, m in enumerate(metrics, start=1)
    ]


def test_paired_differences_see_a_steady_lead_that_the_seeds_spread_hides():
    # stage I differs a lot per seed, and HadSkip is 0.02-0.03 ahead of entropy exit on every seed
    entropy = pd.Series([0.10, 0.20, 0.30, 0.15], index=[1, 2, 3, 4])
    hadskip = pd.Series([0.12, 0.23, 0.32, 0.18], index=[1, 2, 3, 4])
    assert methods.paired(hadskip, entropy).endswith("(4) win")
    assert methods.paired(entropy, hadskip).endswith("(4) loss")
    noisy = pd.Series([0.15, 0.15, 0.25, 0.20], index=[1, 2, 3, 4])
    assert methods.paired(noisy, entropy).endswith("tie")
    assert methods.paired(hadskip.iloc[:1], entropy) == ""  # one shared seed: nothing to say
    assert methods.paired(hadskip.loc[[1, 2, 3]], entropy).startswith("+0.0233 ± 0.0058 (3)")


def test_table_gives_both_views_and_compares_a_variant_with_the_defaults():
    df = pd.DataFrame(
        _rows("full", 6.0, [0.30, 0.40, 0.50, 0.35], method="full")
        + _rows("entropy", 3.0, [0.10, 0.20, 0.30, 0.15])
        + _rows("static", 3.0, [0.0, 0.0, 0.0, 0.0])
        + _rows("hadskip", 3.0, [0.12, 0.23, 0.32, 0.18])
        + _rows("hadskip[nodrop]", 3.0, [0.11, 0.20, 0.36, 0.17])
    )
    lines = {line.split()[1]: line for line in methods.format_table(df, 0.25).splitlines()[2:]}
    assert "tie vs entropy" in lines["hadskip"] and "(4) win vs entropy" in lines["hadskip"]
    assert "(4) tie vs hadskip" in lines["hadskip[nodrop]"]
    assert "paired" not in lines["entropy"] and "vs" not in lines["entropy"]


def test_a_chosen_reference_row_is_what_the_other_hadskip_rows_are_paired_against():
    df = pd.DataFrame(
        _rows("full", 6.0, [0.30, 0.40, 0.50, 0.35], method="full")
        + _rows("entropy", 3.0, [0.10, 0.20, 0.30, 0.15])
        + _rows("hadskip", 3.0, [0.12, 0.23, 0.32, 0.18])
        + _rows("hadskip[new]", 3.0, [0.15, 0.26, 0.35, 0.21])
    )
    lines = {
        line.split()[1]: line for line in methods.format_table(df, 0.25, "hadskip[new]").splitlines()[2:]
    }
    assert "(4) win vs entropy" in lines["hadskip[new]"]
    assert "-0.0300 ± 0.0000 (4) loss vs hadskip[new]" in lines["hadskip"]


def test_an_over_budget_baseline_is_not_the_one_compared():
    df = pd.DataFrame(
        _rows("full", 6.0, [0.3, 0.4], method="full")
        + _rows("entropy", 3.0, [0.9, 0.9], layers=3.5)  # ran more layers than the budget allows
        + _rows("static", 3.0, [0.1, 0.2])
        + _rows("hadskip", 3.0, [0.15, 0.25])
    )
    hadskip = next(line for line in methods.format_table(df, 0.25).splitlines() if " hadskip " in line)
    assert "vs static" in hadskip and "vs entropy" not in hadskip
