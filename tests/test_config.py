from __future__ import annotations

import json

import pytest

from hadskip.config import build_settings, check_budgets, known_keys
from hadskip.errors import ConfigError


def test_defaults_follow_the_paper_except_beta_and_feature_distillation():
    s = build_settings()
    s3 = s.stage3
    assert (s3.alpha_pred, s3.alpha_hidden, s3.alpha_attn, s3.alpha_emb) == (1, 0, 0, 0)  # see config.py
    assert s3.beta == 50  # the paper's 1.0 does not bind at this penalty's scale (see config.py)
    assert s3.homotopic and s3.budget_step == 1.0
    assert s.budgets == [4.5, 3.0, 1.5]


def test_overrides_are_typed_and_nested():
    s = build_settings(
        {"data": {"task": "CoLA"}}, ["stage3.beta=2.5", "stage3.homotopic=false", "budgets=[3, 1.5]"]
    )
    assert s.stage3.beta == 2.5 and s.stage3.homotopic is False and s.budgets == [3.0, 1.5]
    assert s.data.task == "cola"


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown setting 'betta'.*known:") as err:
        build_settings(overrides=["betta=1"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"unknown setting 'beta'; did you mean stage3.beta\?"):
        build_settings(overrides=["beta=1"])


def test_wrong_type_names_field_and_value():
    with pytest.raises(ConfigError, match=r"setting stage3.beta='lots' is invalid"):
        build_settings(overrides=["stage3.beta=lots"])
    with pytest.raises(ConfigError, match=r"setting stage1.lr=-1 is invalid"):
        build_settings(overrides=["stage1.lr=-1"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        build_settings(overrides=["stage1.lr"])


def test_budgets_are_checked_against_depth_without_clamping():
    assert check_budgets([1.5, 4.5, 3], 6) == [4.5, 3, 1.5]
    with pytest.raises(ConfigError, match=r"budget 9 is outside \(0, 6\] for this 6-layer model"):
        check_budgets([3, 6, 9], 6)
    with pytest.raises(ConfigError, match="positive"):
        build_settings(overrides=["budgets=[0]"])


def test_every_key_is_reachable():
    keys = known_keys()
    assert "stage3.alpha_attn" in keys and "data.task" in keys and "budgets" in keys
    for key in ("stage2.enabled=false", "gates.hidden_size=8", "data.max_length=64"):
        build_settings(overrides=[key])


def test_renamed_settings_migrate_from_files_and_name_their_new_key_on_the_command_line():
    old = {"model": {"gate_pooling": "first", "gate_hidden_size": 8}, "stage3": {"sample_gates": False}}
    with pytest.raises(ConfigError, match=r"^gates.estimator=reinforce needs sampled decisions"):
        build_settings(old)  # the moved key is read: argmax decisions need the paper's estimator
    settings = build_settings({**old, "gates": {"estimator": "reinmax"}})
    assert settings.gates.pooling == "first" and settings.gates.hidden_size == 8 and not settings.gates.sample
    with pytest.raises(ConfigError, match=r"'stage3.gate_tau' was renamed to 'gates.tau'"):
        build_settings(overrides=["stage3.gate_tau=2"])


def test_a_run_saved_before_a_setting_existed_still_resumes():
    from hadskip.config import build_settings
    from hadskip.run.run_dir import semantic_settings

    now = json.loads(build_settings({}, ["seed=3"]).model_dump_json())
    before = {k: v for k, v in now.items() if k != "method_seed"}  # saved by a version without it
    assert semantic_settings(before) == semantic_settings(now)
    assert semantic_settings({**now, "seed": 4}) != semantic_settings(now)


def test_a_run_saved_before_the_estimator_existed_resumes_as_the_reinmax_run_it_was():
    from hadskip.run.run_dir import semantic_settings

    now = json.loads(build_settings({}, ["seed=3"]).model_dump_json())
    assert now["gates"]["estimator"] == "reinforce" and now["stage3"]["budget_target"] == "expected"
    before = json.loads(json.dumps(now))
    for group, key in (("gates", "estimator"), ("gates", "detach_input"), ("stage3", "budget_target")):
        del before[group][key]  # saved by a version without these settings
    paper = ["seed=3", "gates.estimator=reinmax", "gates.detach_input=false", "stage3.budget_target=sampled"]
    reinmax = json.loads(build_settings({}, paper).model_dump_json())
    assert semantic_settings(before) == semantic_settings(reinmax)
    assert semantic_settings(before) != semantic_settings(now)  # today's defaults would train another model


def test_the_score_function_estimator_names_the_settings_it_needs():
    settings = build_settings()
    assert settings.gates.estimator == "reinforce" and settings.stage3.budget_target == "expected"
    with pytest.raises(
        ConfigError,
        match=r"^gates.estimator=reinforce needs stage3.budget_target=expected \(or gates.estimator=reinmax\)",
    ):
        build_settings(overrides=["stage3.budget_target=sampled"])
    with pytest.raises(ConfigError, match=r"^gates.estimator=reinforce needs sampled decisions"):
        build_settings(overrides=["gates.sample=false"])
    paper = build_settings(
        overrides=["gates.estimator=reinmax", "stage3.budget_target=sampled", "gates.sample=false"]
    )
    assert paper.gates.estimator == "reinmax" and not paper.gates.sample
    with pytest.raises(ConfigError, match=r"setting gates.estimator='rl' is invalid"):
        build_settings(overrides=["gates.estimator=rl"])
    with pytest.raises(
        ConfigError, match=r"^gates.baseline=greedy is a baseline of the score-function estimator"
    ):
        build_settings(
            overrides=["gates.estimator=reinmax", "stage3.budget_target=sampled", "gates.baseline=greedy"]
        )
    assert build_settings(overrides=["gates.baseline=greedy"]).gates.baseline == "greedy"
    assert build_settings(overrides=["gates.baseline=pair"]).gates.baseline == "pair"
    assert build_settings(overrides=["gates.entropy_bonus=0.01"]).gates.entropy_bonus == 0.01
    with pytest.raises(ConfigError, match=r"gates.entropy_bonus=-0.1 is invalid"):
        build_settings(overrides=["gates.entropy_bonus=-0.1"])
    assert build_settings(overrides=["gates.advantage_norm=rms"]).gates.advantage_norm == "rms"
    with pytest.raises(
        ConfigError, match=r"^gates.advantage_norm=rms scales the score-function estimator's advantages"
    ):
        build_settings(
            overrides=["gates.estimator=reinmax", "stage3.budget_target=sampled", "gates.advantage_norm=rms"]
        )
