"""`--resume` without `--name` continues the sweep last started under --storage (no Ray needed)."""

from __future__ import annotations

import os

import pytest

from hadskip.cli.sweep import build_parser, settings_from_args
from hadskip.errors import ConfigError
from hadskip.sweep.driver import check_new_or_resume


def _sweeps(storage, *names):
    for i, name in enumerate(names):  # later names are newer
        (storage / name).mkdir(parents=True)
        (storage / name / "sweep.json").write_text("{}")
        os.utime(storage / name / "sweep.json", ns=(10**18 + i * 10**9, 10**18 + i * 10**9))


def _settings(storage, *extra):
    args = build_parser().parse_args(["--tasks", "cola", "--storage", str(storage), *extra])
    return settings_from_args(args)


def test_resume_without_a_name_continues_the_last_sweep(tmp_path):
    _sweeps(tmp_path / "state", "glue-bert", "smoke-a1b2c3")
    assert _settings(tmp_path / "state", "--resume").name == "smoke-a1b2c3"
    # the smoke test's random name is not drawn again on --resume
    assert _settings(tmp_path / "state", "--smoke-test", "--resume").name == "smoke-a1b2c3"
    assert _settings(tmp_path / "state", "--resume", "--name", "glue-bert").name == "glue-bert"
    assert _settings(tmp_path / "state").name == "glue-sweep"
    assert _settings(tmp_path / "state", "--smoke-test").name.startswith("smoke-")


def test_resume_names_the_sweeps_there_when_none_fits(tmp_path):
    with pytest.raises(ConfigError, match=r"--resume: no sweep under .* to continue"):
        _settings(tmp_path / "state", "--resume")
    _sweeps(tmp_path / "state", "glue-bert", "smoke-a1b2c3")
    sweep = _settings(tmp_path / "state", "--resume", "--name", "glue-brt")
    with pytest.raises(ConfigError, match="no sweep 'glue-brt' .*; sweeps there: smoke-a1b2c3, glue-bert"):
        check_new_or_resume(sweep)
