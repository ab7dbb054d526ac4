"""The embedded local Ray of a sweep listens on 127.0.0.1 only, and refuses a trial it cannot hold."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _listening(pids: set[str]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[3] for line in out.splitlines() if any(f"pid={p}," in line for p in pids)})


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss to list listening sockets")
def test_the_local_ray_binds_to_loopback_only(monkeypatch, tmp_path):
    import ray
    from ray._private import ray_constants

    from hadskip.errors import ConfigError
    from hadskip.sweep.driver import LOOPBACK_VAR, check_one_trial_fits, connect
    from hadskip.sweep.settings import SweepSettings

    # connect() sets these for the process: give them back afterwards
    monkeypatch.delenv(LOOPBACK_VAR, raising=False)
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    sweep = SweepSettings(
        tasks=["cola"], budgets=[1.0], storage=str(tmp_path / "s"), results=str(tmp_path / "r")
    )
    try:
        connect(sweep, num_cpus=1)
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        # every process of this Ray (GCS, raylet, dashboard, ...) is a descendant of this one
        tree = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
        children: dict[str, list[str]] = {}
        for line in tree.splitlines():
            pid, ppid = line.split()
            children.setdefault(ppid, []).append(pid)
        pids, todo = set(), [str(os.getpid())]
        while todo:
            for child in children.get(todo.pop(), []):
                pids.add(child)
                todo.append(child)
        ports = _listening(pids)
        assert ports and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in ports), ports
        # and a 1-CPU Ray cannot hold a trial of one 1-CPU worker: refused by name, not a 120 s wait
        with pytest.raises(ConfigError, match="needs 1.25 CPUs"):
            check_one_trial_fits(sweep)
    finally:
        ray.shutdown()
