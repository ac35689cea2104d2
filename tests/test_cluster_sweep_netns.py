"""``muxlab sweep --cluster`` between hosts: the network namespace lab (scripts/netns-lab.sh).

The lab runs with ``--server-worker``: a Dask worker "server" in the server namespace,
besides client1 and client2 in theirs. The sweep itself runs in the server namespace (the
only place the scheduler's address is reachable from), and starts every point's server
through the "server" worker, so the server is in the server namespace because Dask put it
there, and the load comes from the two client namespaces. Root only (skipped with the
reason otherwise, required in CI); each test brings up its own lab under a unique name
and takes it down whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.results import ResultsFile
from benchmarks.topology import ClientHost
from tests.cluster_lab import NetnsLab, running_lab

pytestmark = pytest.mark.timeout(900)
SCHEDULER = "tcp://198.18.0.1:8786"
CONNECTIONS = (2, 4)
HOSTS = 2


def sweep_argv(lab: NetnsLab, out: Path, duration_s: float) -> list[str]:
    # 2 s windows: a snapshot's tolerance is 5% of the window, and on a loaded shared
    # machine the counters' round trip through Dask can take tens of ms.
    return ["ip", "netns", "exec", lab.server_ns, sys.executable, "-m", "muxlab", "sweep",
            "--cluster", SCHEDULER, "--server-host", "server", "--preset", "quick",
            "--experiments", "active", "--impls", "epoll-lt",
            "--connections", ",".join(map(str, CONNECTIONS)), "--repeats", "1",
            "--retries", "1", "--warmup", "0.3", "--duration", str(duration_s),
            "--out-dir", str(out), "--run-id", "lab", "--no-charts", "--quiet"]  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    with running_lab(tmp_path, "s", "--server-worker") as running:
        yield running


def test_a_sweep_loads_a_server_host_from_two_client_hosts(lab: NetnsLab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(sweep_argv(lab, out, 2.0), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = ResultsFile.load(out / "lab")
    topology = results.topology
    assert topology.mode == "cluster" and topology.cluster == topology.scheduler == SCHEDULER
    assert topology.server_host == "server"
    assert (topology.server_address or "").startswith("tcp://198.18.0.1:")
    assert [(c.name, c.address.rsplit(":", 1)[0], c.processes) for c in topology.clients] == [
        ("client1", "tcp://198.18.0.2", 1),
        ("client2", "tcp://198.18.0.3", 1),
    ]
    assert all(isinstance(c, ClientHost) for c in topology.clients)
    assert topology.skew_ms is not None and topology.skew_ms >= 0
    points = {p["spec"]["connections"]: p for p in results.data["points"]}
    assert sorted(points) == list(CONNECTIONS)
    for connections, point in points.items():
        assert point["status"] == "done", point["reason"]
        [run] = [r for r in point["repeats"] if r["valid"]]
        load = json.loads((results.run_dir / run["loadgen_json"]).read_text())
        hosts = {h["name"]: h for h in load["hosts"]}
        assert sorted(hosts) == ["client1", "client2"]
        # The load went to the server's address in the server namespace.
        assert load["config"]["host"] == "198.18.0.1"
        assert run["errors"] == {} and load["errors"] == {}
        assert all(h["errors"] == {} and h["requests_ok"] > 0 for h in hosts.values())
        assert run["requests_ok"] == load["requests_ok"]
        assert load["requests_ok"] == sum(h["requests_ok"] for h in hosts.values())
        assert sum(h["connections"] for h in hosts.values()) == connections
        # The server counted the clients' connections: open when the window opened, and
        # accepted in all, with each host's one preflight probe (loadgen/preflight.py).
        assert run["server_connections_open"] == connections
        assert run["server_connections_accepted"] == connections + HOSTS


def test_a_lost_server_host_is_named_and_the_sweep_ends(lab: NetnsLab, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sweep = subprocess.Popen(sweep_argv(lab, out, 4.0), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # The first point's load result is written, its server still up or being stopped:
        # the server host vanishes then, before or during the second point.
        deadline = time.monotonic() + 300
        while not list((out / "lab" / "loadgen").glob("*.json")):
            assert sweep.poll() is None, sweep.communicate()
            assert time.monotonic() < deadline, "no load result within 300 s"
            time.sleep(0.1)
        os.kill(lab.worker_pid("server"), signal.SIGKILL)
        stdout, stderr = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 1, stdout + stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("muxlab sweep: error:")]
    assert line.startswith("muxlab sweep: error: server host server (tcp://198.18.0.1:")
    assert "lost" in line and "Traceback" not in stderr
    results = ResultsFile.load(out / "lab")
    assert results.data["state"] == "interrupted"
