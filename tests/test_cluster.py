"""``muxlab load --cluster`` against a real Dask cluster of two worker processes on loopback.

Two Dask workers named client1 and client2 stand for two client hosts (the network
namespace lab in test_cluster_netns.py makes them real hosts on a bridge, as root).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from loadgen.phase_lines import phase_line
from tests.cluster_lab import LocalDask, local_dask, require_distributed, wait_for_line
from tests.conftest import ServerFactory

PHASE_MEASURE = phase_line("measure")
pytestmark = pytest.mark.timeout(300)
CONNECTIONS = 4


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDask]:
    """Shared by the tests that leave both workers running (startup: seconds each)."""
    require_distributed()
    with local_dask(tmp_path_factory.mktemp("dask"), ["client1", "client2"]) as dask:
        yield dask


def cluster_load(address: str, port: int, out: Path, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "muxlab", "load", "--port", str(port), "--cluster", address,
            "--connections", str(CONNECTIONS), "--processes", "1", "--warmup", "0.5",
            "--duration", str(duration_s), "--json", str(out)]  # fmt: skip


def test_two_hosts_merge_to_the_sum_of_their_requests(
    start_server: ServerFactory, tmp_path: Path, two_workers: LocalDask
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "r.json"
    dask = two_workers
    argv = [*cluster_load(dask.address, server.port, out, 1.5), "--phase-lines"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    hosts = {h["name"]: h for h in data["hosts"]}
    assert sorted(hosts) == ["client1", "client2"]
    assert data["schema_version"] == 2
    assert data["errors"] == {} and all(h["errors"] == {} for h in hosts.values())
    assert all(h["requests_ok"] > 0 for h in hosts.values())
    assert data["requests_ok"] == sum(h["requests_ok"] for h in hosts.values())
    assert [h["connections"] for h in hosts.values()] == [CONNECTIONS // 2] * 2
    assert data["connections"]["active"] == CONNECTIONS
    # One worker process per host, each with its CPU figure, merged in host order.
    assert data["client_cpu"] == [u for h in data["hosts"] for u in h["client_cpu"]]
    assert all(len(h["client_cpu"]) == 1 and h["processes"] == 1 for h in hosts.values())
    assert data["client_bound"] == any(h["client_bound"] for h in hosts.values())
    assert data["cluster"]["hosts"] == 2 and data["cluster"]["cluster"] == dask.address
    assert data["cluster"]["skew_ms"] >= 0
    # Every answered request of both hosts is one latency in the merged histogram.
    merged = HdrHistogram.decode(data["histogram"].encode())
    assert merged.get_total_count() == data["requests_ok"]
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["muxlab load: phase measure", "muxlab load: phase end"]
    for name in hosts:
        assert any(line.startswith(f"  host {name} ") for line in lines)


def test_open_loop_over_two_hosts_keeps_every_slot_and_idle_connection(
    start_server: ServerFactory, tmp_path: Path, two_workers: LocalDask
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "r.json"
    argv = cluster_load(two_workers.address, server.port, out, 1.5)
    proc = subprocess.run([*argv, "--rate", "400", "--idle", "3"], capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    slots = data["open_loop"]
    assert slots["offered_rps"] == 400.0 and slots["due"] > 0
    assert slots["due"] == slots["answered"] + slots["late"] + slots["refused"]
    assert data["connections"]["idle"] == data["connections"]["idle_open_at_end"] == 3
    assert sorted(h["idle"] for h in data["hosts"]) == [1, 2]
    assert data["latency_us_uncorrected"] is not None


def test_a_lost_host_is_named_and_the_run_ends(start_server: ServerFactory, tmp_path: Path) -> None:
    require_distributed()
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "r.json"
    with local_dask(tmp_path, ["client1", "client2"]) as dask:
        argv = [*cluster_load(dask.address, server.port, out, 8.0), "--phase-lines"]
        load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The window is open on both hosts when client2's worker dies.
            wait_for_line(load, PHASE_MEASURE, timeout_s=240)
            dask.kill("client2")
            # client1 measures to the end of its window; client2 must not be waited for.
            stdout, stderr = load.communicate(timeout=120)
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
    assert data["requests_ok"] == hosts["client1"]["requests_ok"]


def test_a_host_that_cannot_run_its_share_stops_the_run_naming_it(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    require_distributed()
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "r.json"
    # client2's worker is a Nanny's daemonic child, which may not start processes.
    with local_dask(tmp_path, ["client1", "client2"], with_nanny=["client2"]) as dask:
        proc = subprocess.run(cluster_load(dask.address, server.port, out, 1.0),
                              capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if "error" in line]
    assert line.startswith("muxlab load: error: host client2 (tcp://127.0.0.1:")
    assert "--no-nanny" in line and "Traceback" not in proc.stderr
    assert not out.exists()
