"""``muxlab serve --workers N``: counts that add up, refusals, and a death reported.

Whether a shared listener's herd shows up as ``accept_wakeups_empty > 0`` depends on the
scheduler (on 2 CPUs a woken worker may find the connection already taken inside the
kernel and sleep again unseen), so nothing here asserts it; what is asserted is exact.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

from servers.backends import READ
from servers.contract import parse_counters_line, parse_ready_line
from servers.loop import Server, ServerConfig
from servers.multiproc import (
    BALANCE_NAMES,
    ExclusiveListenerEdgeEpoll,
    ExclusiveListenerEpoll,
    combine_counters,
)
from tests.conftest import ServerFactory

SERVE = [sys.executable, "-m", "muxlab", "serve"]
CONNECTIONS = 24
INT_KEYS = ("accepts", "connections_accepted", "bytes_in", "bytes_out", "wait_calls", "events")


def echo_round_trips(address: tuple[str, int], count: int) -> None:
    """``count`` connections, opened together (a connect burst), each echoing its number."""
    socks = [socket.create_connection(address, timeout=10) for _ in range(count)]
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"%04d" % i)
        for i, sock in enumerate(socks):
            assert sock.recv(4) == b"%04d" % i
    finally:
        for sock in socks:
            sock.close()


def workers_of(counters: dict[str, Any]) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = counters["workers"]
    return workers


@pytest.mark.parametrize("balance", BALANCE_NAMES)
def test_per_worker_accepts_sum_to_the_connections_made(
    start_server: ServerFactory, balance: str
) -> None:
    server = start_server(
        "epoll-lt", "echo", extra_args=["--workers", "2", "--balance", balance], ready_timeout_s=60
    )
    before = server.counters()
    echo_round_trips(server.address, CONNECTIONS)
    after = server.counters()
    per_worker = [
        a["connections_accepted"] - b["connections_accepted"]
        for a, b in zip(workers_of(after), workers_of(before), strict=True)
    ]
    assert len(per_worker) == 2
    assert sum(per_worker) == CONNECTIONS
    assert after["connections_accepted"] - before["connections_accepted"] == CONNECTIONS
    assert after["bytes_out"] - before["bytes_out"] == 4 * CONNECTIONS


def test_sigusr1_line_holds_each_worker_and_their_sum(start_server: ServerFactory) -> None:
    server = start_server(
        "poll", "echo", extra_args=["--workers", "3", "--balance", "shared"], ready_timeout_s=60
    )
    echo_round_trips(server.address, 5)
    counters = server.counters()
    workers = workers_of(counters)
    assert [w["worker"] for w in workers] == [0, 1, 2]
    assert len({w["pid"] for w in workers}) == 3
    assert server.pid not in {w["pid"] for w in workers}
    for key in INT_KEYS:
        assert counters[key] == sum(w[key] for w in workers), key
    assert counters["connections_accepted"] == 5
    assert counters["cpu_user_s"] == pytest.approx(sum(w["cpu_user_s"] for w in workers))


def test_one_worker_is_one_process_without_worker_entries(start_server: ServerFactory) -> None:
    server = start_server("poll", "echo", extra_args=["--workers", "1"])
    echo_round_trips(server.address, 2)
    counters = server.counters()
    assert "workers" not in counters
    assert counters["connections_accepted"] == 2
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        assert f.read() == ""  # proc(5): no child process serves


def test_exclusive_is_refused_on_poll_with_exit_2() -> None:
    proc = subprocess.run(
        [*SERVE, "--backend", "poll", "--workers", "2", "--balance", "exclusive"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "EPOLLEXCLUSIVE" in lines[0] and "poll" in lines[0]


@pytest.mark.parametrize("cpus", ["x", "-1", "99999"])
def test_bad_cpu_list_is_a_usage_error(cpus: str) -> None:
    proc = subprocess.run(
        [*SERVE, "--workers", "2", "--cpus", cpus], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("muxlab serve: error: --cpus"), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_parent_stops_every_worker_with_exit_0(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*SERVE, "--backend", "poll", "--workers", "2", "--balance", "shared"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert parse_ready_line(proc.stdout.readline()) is not None
        proc.send_signal(signal.SIGUSR1)
        counters = parse_counters_line(proc.stdout.readline().rstrip("\n"))
        assert counters is not None
        pids = [w["pid"] for w in workers_of(counters)]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    final = parse_counters_line(out.splitlines()[-1])
    assert final is not None
    assert [w["pid"] for w in workers_of(final)] == pids
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert "Traceback" not in err


def test_a_killed_worker_stops_the_server_non_zero_and_names_it() -> None:
    proc = subprocess.Popen(
        [*SERVE, "--backend", "epoll-et", "--workers", "2", "--balance", "reuseport"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert parse_ready_line(proc.stdout.readline()) is not None
        proc.send_signal(signal.SIGUSR1)
        line = proc.stdout.readline()
        counters = parse_counters_line(line.rstrip("\n"))
        assert counters is not None, line
        victim = workers_of(counters)[1]["pid"]
        survivor = workers_of(counters)[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err
    assert f"worker 1 (pid {victim}) killed by SIGKILL" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("muxlab serve: error: worker 1")
    final = parse_counters_line(out.splitlines()[-1])
    assert final is not None
    assert [w["worker"] for w in workers_of(final)] == [0]
    assert not os.path.exists(f"/proc/{survivor}"), "the other worker outlived the server"


@pytest.mark.parametrize("cls", [ExclusiveListenerEpoll, ExclusiveListenerEdgeEpoll])
def test_exclusive_backends_register_the_listener_exclusive(
    cls: type[ExclusiveListenerEpoll],
) -> None:
    # epoll_ctl(2): EPOLL_CTL_MOD of a descriptor added with EPOLLEXCLUSIVE is EINVAL, so a
    # refused MOD proves the flag went in; any other descriptor modifies normally.
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as other:
        backend = cls(listener.fileno())
        try:
            backend.register(listener.fileno(), READ)
            backend.register(other.fileno(), READ)
            backend.modify(other.fileno(), READ | select.POLLOUT)
            with pytest.raises(OSError) as caught:
                backend.modify(listener.fileno(), READ)
            assert caught.value.errno == errno.EINVAL
        finally:
            backend.close()


@pytest.mark.parametrize("backend", ["poll", "epoll-lt", "epoll-et"])
def test_a_listener_event_with_nothing_to_accept_is_counted_as_an_empty_wakeup(
    backend: str,
) -> None:
    server = Server(ServerConfig(backend=backend))  # type: ignore[arg-type]
    try:
        server._on_acceptable()  # nothing queued: what a herd's losers see
        assert (server.counters.accept_wakeups_empty, server.counters.accepts_eagain) == (1, 1)
        with socket.create_connection(server.address, timeout=5):
            deadline = time.monotonic() + 5
            while server.counters.accepts == 0 and time.monotonic() < deadline:
                server._on_acceptable()  # the connection may take a moment to be queued
            # The call that accepted ended its batch with EAGAIN too: that one is not an
            # empty wake-up, every other call was.
            assert server.counters.accepts == 1
            assert server.counters.accepts_eagain - server.counters.accept_wakeups_empty == 1
    finally:
        server._close_all()


def test_combined_counters_sum_merge_errors_and_keep_the_largest_queue_peak() -> None:
    a = {"accepts": 3, "cpu_user_s": 0.5, "peak_output_bytes": 10, "errors": {"EPIPE": 1}}
    b = {"accepts": 4, "cpu_user_s": 0.25, "peak_output_bytes": 7, "errors": {"EPIPE": 2, "x": 1}}
    total = combine_counters({0: a, 1: b}, {0: 100, 1: 101})
    assert total["accepts"] == 7
    assert total["cpu_user_s"] == 0.75
    assert total["peak_output_bytes"] == 10
    assert total["errors"] == {"EPIPE": 3, "x": 1}
    assert total["workers"] == [{"worker": 0, "pid": 100, **a}, {"worker": 1, "pid": 101, **b}]
