"""The cluster path for real: a sweep joins a two-node Ray cluster by --address, is killed (kill -9) while
its trials run on both nodes, and resumes there without losing or repeating a point.

Both nodes are Ray processes on this machine (`ray.cluster_utils.Cluster`), each with its own raylet,
object store and node id, so scheduling, placement and the sweep's shared storage work as across machines;
only the network between them is loopback. The test tears down just the cluster it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from test_sweep import REPO, SCRIPT, TINY

from hadskip.results import read_results

CPUS_PER_NODE = 2
CPUS_PER_WORKER = 0.9  # a trial holds 0.25 CPU + 0.9 for its worker: one per node fits, two need both


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    port = _free_port()
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": CPUS_PER_NODE,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
        },
    )
    try:
        cluster.add_node(num_cpus=CPUS_PER_NODE)
        cluster.wait_for_nodes()
        nodes = {node.node_id for node in cluster.list_all_nodes()}
        assert len(nodes) == 2
        yield cluster, nodes, f"http://127.0.0.1:{port}"
    finally:
        cluster.shutdown()


def test_a_sweep_on_two_nodes_survives_kill_9_of_its_driver(tmp_path, tiny_model_dir, glue_dir, two_nodes):
    cluster, nodes, dashboard = two_nodes
    argv = [
        sys.executable,
        str(SCRIPT),
        "--address",
        cluster.address,
        "--model",
        tiny_model_dir,
        "--data-dir",
        str(glue_dir),
        "--storage",
        str(tmp_path / "state"),
        "--results",
        str(tmp_path / "results"),
        "--cpus-per-worker",
        str(CPUS_PER_WORKER),
        "--tasks",
        "cola",
        "--budgets",
        "3,1.5",
        "--trials-per-point",
        "4",
        "--max-concurrent",
        "2",
        "--scheduler",
        "fifo",
        "--name",
        "two-nodes",
        *TINY,
    ]
    # the state API (which frees a stopped trial's workers) must find this cluster, never another one
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_API_SERVER_ADDRESS": dashboard}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    results = tmp_path / "results" / "cola"
    deadline = time.time() + 420
    try:
        while time.time() < deadline and not list(results.glob("budget-1.5/*.parquet")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver only: the cluster and its trials' actors live on
        proc.wait()
        log.close()
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.parquet") if "budget-4" not in str(p)}
    assert before, "no point was written before the kill: " + (tmp_path / "first.log").read_text()[-3000:]

    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    df = read_results(tmp_path / "results")
    points = df[df.method == "hadskip"]
    assert len(points) == 4 * 2 and not points.duplicated(["trial_id", "budget"]).any()
    assert (points.status == "ok").all() and (df.method == "full").sum() == 1
    for path, mtime in before.items():  # finished points were neither lost nor re-run
        assert path.stat().st_mtime_ns == mtime
    # trials trained on both nodes, and each run folder says which
    ran_on = {
        json.loads(p.read_text())["node_id"]
        for p in (tmp_path / "state" / "two-nodes" / "runs").glob("*/timing.json")
    }
    assert ran_on == nodes
