"""``muxlab load`` against wrk: same server, same client CPU, same connections.

The server (nginx with one worker when installed, else muxlab's epoll-lt HTTP server) is
pinned to the first CPU, each client in turn to the second, one thread/process each, 100
connections, closed loop, no pipelining. The rounds alternate wrk and muxlab load so that
drift on the machine hits both; ``extra_info`` has each one's requests/s and CPU time per
request, ``ratio`` = muxlab load's requests/s / wrk's with its per-round spread, the goal
(``goal_ratio``: >= 1.0) and the verdict against it (``goal_verdict``: met when every
round's ratio is at or above it, missed when every one is below, undecided otherwise).

Asserted, because it does not depend on timing: every round of both clients completed
with zero errors (wrk: no socket errors, no non-2xx reply; muxlab load: an empty error
table and exit status 0) and answered requests. Reported, not asserted: the ratio and its
verdict, since a timing goal is not a test.

``test_muxlab_load_vs_wrk_default_nginx`` does the same against nginx with its *default*
``keepalive_requests`` (1000): both clients reopen each connection after its 1000th
reply, and muxlab load must count those reconnects (asserted). Run on a quiet machine:

    pytest --benchmark-only benchmarks/test_loadgen_vs_wrk.py -s
"""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Iterator

import pytest

from benchmarks.test_loadgen_efficiency import fast_http_server, pinned_cpus
from loadgen import LoadConfig, run_load
from muxlab.cpu import children_cpu_s
from servers.peers import NginxServer, nginx_path
from servers.process import ServerProcess
from tests.conftest import require_tool
from tests.http_servers import DefaultKeepaliveNginx

CONNECTIONS = 100
DURATION_S = 5
ROUNDS = 3
GOAL_RATIO = 1.0  # muxlab load at least as fast as wrk on one client CPU


@pytest.fixture(scope="module")
def server() -> Iterator[NginxServer | ServerProcess]:
    server_cpu, _ = pinned_cpus()
    with fast_http_server(server_cpu) as running:
        yield running


def run_wrk(wrk: str, port: int, cpu: int) -> tuple[float, float]:
    """(requests/s, client CPU microseconds per request) of one wrk run."""
    before = children_cpu_s()
    out = subprocess.run(
        ["taskset", "-c", str(cpu), wrk, "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True, timeout=DURATION_S + 60,
    ).stdout  # fmt: skip
    cpu_s = children_cpu_s() - before
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    return rps, cpu_s / requests * 1e6


def run_muxlab(port: int, cpu: int) -> tuple[float, float, int]:
    """(requests/s, client CPU microseconds per request, reconnects) of one muxlab run."""
    result = run_load(
        LoadConfig(port=port, protocol="http", connections=CONNECTIONS, processes=1,
                   cpus=(cpu,), duration_s=DURATION_S, warmup_s=1.0)
    )  # fmt: skip
    assert result.errors == {}
    assert result.exit_status == 0
    cpu_s = result.client_cpu[0] * result.duration_s
    return result.rps, cpu_s / result.requests_ok * 1e6, result.reconnects


def compare(wrk: str, port: int, cpu: int) -> dict[str, float | str]:
    wrk_runs, muxlab_runs = [], []
    for _ in range(ROUNDS):
        wrk_runs.append(run_wrk(wrk, port, cpu))
        muxlab_runs.append(run_muxlab(port, cpu))
    wrk_rps = statistics.median(r for r, _ in wrk_runs)
    muxlab_rps = statistics.median(r for r, _, _ in muxlab_runs)
    ratios = sorted(m[0] / w[0] for m, w in zip(muxlab_runs, wrk_runs, strict=True))
    return {
        "rounds": len(ratios),
        "requests_answered": min(r for r, _ in wrk_runs) > 0
        and min(r for r, _, _ in muxlab_runs) > 0,
        "wrk_rps": round(wrk_rps),
        "muxlab_rps": round(muxlab_rps),
        "ratio": round(muxlab_rps / wrk_rps, 3),
        "ratio_min": round(ratios[0], 3),  # per alternating round: the spread
        "ratio_max": round(ratios[-1], 3),
        "muxlab_reconnects": max(n for _, _, n in muxlab_runs),
        "wrk_cpu_us_per_request": round(statistics.median(c for _, c in wrk_runs), 3),
        "muxlab_cpu_us_per_request": round(statistics.median(c for _, c, _ in muxlab_runs), 3),
        "goal_ratio": GOAL_RATIO,
        "goal_verdict": goal_verdict(ratios),
    }


def goal_verdict(ratios: list[float]) -> str:
    """Against :data:`GOAL_RATIO`, over the per-round ratios (reported, never asserted)."""
    if min(ratios) >= GOAL_RATIO:
        return "met"
    return "missed" if max(ratios) < GOAL_RATIO else "undecided"


def test_muxlab_load_vs_wrk(
    benchmark: pytest.FixtureRequest, server: NginxServer | ServerProcess
) -> None:
    wrk = require_tool("wrk")
    _, client_cpu = pinned_cpus()
    benchmark.group = "loadgen vs wrk: HTTP, 100 connections, one client CPU"  # type: ignore[attr-defined]
    numbers = benchmark.pedantic(  # type: ignore[attr-defined]
        compare, args=(wrk, server.port, client_cpu), rounds=1, iterations=1
    )
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        server="nginx" if isinstance(server, NginxServer) else "muxlab epoll-lt",
        connections=CONNECTIONS,
        client_cpu=client_cpu,
        **numbers,
    )
    print(f"\nmuxlab load vs wrk: {numbers}")
    # Zero errors in every round is asserted inside run_wrk and run_muxlab.
    assert numbers["rounds"] == ROUNDS and numbers["requests_answered"] is True


@pytest.fixture(scope="module")
def default_nginx() -> Iterator[DefaultKeepaliveNginx]:
    if nginx_path() is None:
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    server_cpu, _ = pinned_cpus()
    with DefaultKeepaliveNginx("http", cpu=server_cpu) as running:
        yield running


def test_muxlab_load_vs_wrk_default_nginx(
    benchmark: pytest.FixtureRequest, default_nginx: DefaultKeepaliveNginx
) -> None:
    wrk = require_tool("wrk")
    _, client_cpu = pinned_cpus()
    benchmark.group = "loadgen vs wrk: default nginx (keepalive_requests 1000)"  # type: ignore[attr-defined]
    numbers = benchmark.pedantic(  # type: ignore[attr-defined]
        compare, args=(wrk, default_nginx.port, client_cpu), rounds=1, iterations=1
    )
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        server="nginx, default keepalive_requests", connections=CONNECTIONS,
        client_cpu=client_cpu, **numbers,
    )  # fmt: skip
    print(f"\nmuxlab load vs wrk, default nginx: {numbers}")
    # Clean runs are asserted in run_muxlab and run_wrk; the reopened connections show.
    assert numbers["muxlab_reconnects"] > 0
