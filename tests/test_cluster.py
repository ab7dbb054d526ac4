"""cluster/config.yaml passes Ray's cluster-launcher schema offline, and keeps its promises."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hadskip.errors import ConfigError
from hadskip.sweep.cluster import validate_cluster_config

CONFIG = Path(__file__).resolve().parents[1] / "cluster" / "config.yaml"


def test_cluster_config_is_valid_for_ray_up():
    prepared = validate_cluster_config(CONFIG)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"] <= prepared["max_workers"]


def test_cluster_config_pins_installs_and_keeps_the_dashboard_private():
    raw = yaml.safe_load(CONFIG.read_text())
    setup = " ".join(raw["setup_commands"])
    assert "torch==2.13.0" in setup and "cu1" in setup  # pinned, CUDA build
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    assert "s3://" in CONFIG.read_text()  # shared storage for --storage / --results


@pytest.mark.parametrize(
    "text,message",
    [
        ("cluster_name: x\nprovider: {type: aws}\nmax_wrokers: 2\n", "invalid"),
        ("cluster_name: x\nprovider: 3\n", "invalid"),
        ("- a\n", "mapping"),
    ],
)
def test_a_broken_cluster_config_is_a_one_line_error(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        validate_cluster_config(bad)
    assert len(str(err.value).splitlines()) == 1


def test_cluster_installs_are_constrained_to_the_tested_versions():
    from importlib.metadata import version

    raw = yaml.safe_load(CONFIG.read_text())
    pip = [c for c in raw["setup_commands"] if "pip install" in c]
    assert pip and all("-c /home/ubuntu/hadskip/constraints.txt" in c for c in pip)
    lines = (CONFIG.parents[1] / "constraints.txt").read_text().splitlines()
    assert lines[0].startswith("# ") and "pip freeze --exclude-editable" in lines[0]
    pins = dict(line.split("==", 1) for line in lines[1:])
    assert pins["ray"] == version("ray") and pins["torch"] == version("torch").split("+")[0]
    assert not any(name.lower() == "hadskip" for name in pins)
