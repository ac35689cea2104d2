"""``muxlab load --cluster`` between hosts: the network namespace lab (scripts/netns-lab.sh).

A server host and two client hosts, each its own network namespace on a bridge, with a
Dask scheduler on the server host and a worker on each client host; the load generator
runs in the server's namespace, so no packet leaves the lab. Root only (skipped with the
reason otherwise, required in CI). Each test brings up its own lab, with a unique name so
that parallel runs do not clash, and takes it down whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen.phase_lines import phase_line
from tests.cluster_lab import NetnsLab, netns_lab, running_lab, serve_in_netns, wait_for_line

PHASE_MEASURE = phase_line("measure")
pytestmark = pytest.mark.timeout(600)
SERVER = "198.18.0.1"
PORT = 7000
SCHEDULER = f"tcp://{SERVER}:8786"
CONNECTIONS = 4


def load_argv(lab: NetnsLab, out: Path, duration_s: float) -> list[str]:
    return ["ip", "netns", "exec", lab.server_ns, sys.executable, "-m", "muxlab", "load",
            "--host", SERVER, "--port", str(PORT), "--cluster", SCHEDULER,
            "--connections", str(CONNECTIONS), "--processes", "1", "--warmup", "0.5",
            "--duration", str(duration_s), "--json", str(out)]  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    with running_lab(tmp_path, "t") as running:
        yield running


def test_two_client_hosts_merge_to_the_sum_with_zero_errors(lab: NetnsLab, tmp_path: Path) -> None:
    pids = [lab.worker_pid("client1"), lab.worker_pid("client2")]
    again = netns_lab("up", lab.name, tmp_path)
    assert again.returncode == 0, again.stderr
    assert [lab.worker_pid("client1"), lab.worker_pid("client2")] == pids  # idempotent
    assert sorted(lab.namespaces()) == sorted(f"{lab.name}-{s}" for s in ("br", "c1", "c2", "srv"))
    out = tmp_path / "r.json"
    with serve_in_netns(lab.server_ns, SERVER, PORT):
        proc = subprocess.run(load_argv(lab, out, 1.5), capture_output=True, text=True,
                              timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    hosts = {h["name"]: h for h in data["hosts"]}
    assert sorted(hosts) == ["client1", "client2"]
    assert data["errors"] == {} and all(h["errors"] == {} for h in hosts.values())
    assert all(h["requests_ok"] > 0 for h in hosts.values())
    assert data["requests_ok"] == sum(h["requests_ok"] for h in hosts.values())
    assert {h["address"].split("//")[1].split(":")[0] for h in hosts.values()} == {
        "198.18.0.2",
        "198.18.0.3",
    }
    down = netns_lab("down", lab.name, tmp_path)
    assert down.returncode == 0, down.stderr
    assert lab.namespaces() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_client_host_killed_mid_run_is_named(lab: NetnsLab, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with serve_in_netns(lab.server_ns, SERVER, PORT):
        argv = [*load_argv(lab, out, 8.0), "--phase-lines"]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The window is open on both hosts when client2's worker dies.
            wait_for_line(load, PHASE_MEASURE, timeout_s=240)
            os.kill(lab.worker_pid("client2"), signal.SIGKILL)
            stdout, stderr = load.communicate(timeout=180)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
    assert load.returncode == 1, stdout + stderr
    assert "host client2" in stderr and "lost" in stderr
    data = json.loads(out.read_text())
    assert data["errors"]["host_lost"] == 1
    hosts = {h["name"]: h for h in data["hosts"]}
    assert "lost" in hosts["client2"]["failure"]
    assert hosts["client1"]["failure"] is None and hosts["client1"]["requests_ok"] > 0
