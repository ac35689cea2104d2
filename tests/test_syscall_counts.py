"""System calls per request: what the counters count, checked against the kernel's own
tally once (``strace -c -f``)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from servers.backends.base import Tally
from servers.backends.epoll_backend import EpollBackend
from servers.counters import Counters
from servers.process import ServerProcess
from tests.clients import recv_exactly
from tests.conftest import ServerFactory, require_backend, require_tool

CONNECTIONS = 20
REQUESTS_PER_CONNECTION = 50
MSG_BYTES = 1024
# epoll_ctl calls per connection that opens, is echoed to without queueing, and closes:
# ADD at accept and DEL at close. select and poll keep interest in user space; io_uring-poll
# hands its changes over as SQEs.
CTL_CALLS_PER_CONNECTION = {"select": 0, "poll": 0, "epoll-lt": 2, "epoll-et": 2,
                            "io_uring-poll": 0}  # fmt: skip


def test_syscalls_sum_io_calls_in_the_loop_and_only_enters_in_the_ring() -> None:
    fields = dict(wait_calls=10, reads=7, reads_eagain=3, writes=6, writes_eagain=1,
                  accepts=2, accepts_eagain=2, ctl_calls=4)  # fmt: skip
    assert Counters(**fields).syscalls() == 35  # type: ignore[arg-type]
    # A ring: its waits are io_uring_enter calls, counted once, as enters.
    assert Counters(**fields, uring_enters=12).syscalls() == 35 - 10 + 12  # type: ignore[arg-type]
    completion = Counters(**fields, uring_enters=12, syscall_model="completion")  # type: ignore[arg-type]
    assert completion.syscalls() == 12 + 4
    assert Counters(**fields).snapshot()["syscalls"] == 35  # type: ignore[arg-type]
    assert "syscalls" not in Counters(syscall_model="uncounted").snapshot()


def test_epoll_counts_one_ctl_call_per_interest_change() -> None:
    backend = EpollBackend()
    tally = Tally()
    backend.count_into(tally)
    a, b = socket.socketpair()
    try:
        backend.register(a.fileno(), 1)
        backend.modify(a.fileno(), 5)
        backend.unregister(a.fileno())
        with pytest.raises(OSError):
            backend.modify(b.fileno(), 1)  # not registered: the kernel says ENOENT
    finally:
        backend.close()
        a.close()
        b.close()
    assert tally.ctl_calls == 4


def echo_requests(address: tuple[str, int]) -> None:
    """CONNECTIONS connections, REQUESTS_PER_CONNECTION 1 KiB echoes each, one at a time,
    every reply checked; then all close."""
    socks = [socket.create_connection(address, timeout=10) for _ in range(CONNECTIONS)]
    try:
        for n in range(REQUESTS_PER_CONNECTION):
            for cid, sock in enumerate(socks):
                msg = bytes([(cid + n) % 251]) * MSG_BYTES
                sock.sendall(msg)
                assert recv_exactly(sock, MSG_BYTES) == msg
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("backend", list(CTL_CALLS_PER_CONNECTION))
def test_server_counts_its_epoll_ctl_calls_per_connection(
    backend: str, start_server: ServerFactory
) -> None:
    server = start_server(require_backend(backend), "echo")
    before = server.counters()
    echo_requests(server.address)
    deadline = time.monotonic() + 10
    after = server.counters()
    while after["connections_open"] and time.monotonic() < deadline:
        time.sleep(0.05)
        after = server.counters()
    assert after["connections_closed"] - before["connections_closed"] == CONNECTIONS
    assert after["ctl_calls"] - before["ctl_calls"] == (
        CTL_CALLS_PER_CONNECTION[backend] * CONNECTIONS
    )
    requests = CONNECTIONS * REQUESTS_PER_CONNECTION
    assert after["syscalls"] - before["syscalls"] >= 2 * requests  # a recv and a send each


def strace_counts(path: Path) -> dict[str, int]:
    """``strace -c`` summary: calls per system call name."""
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


# The kernel's names for what CPython calls: glibc may implement accept(2) as accept4 and
# epoll_wait(2) as epoll_pwait (on arm64 there is no epoll_wait system call at all).
ACCEPT_CALLS = ("accept", "accept4")
WAIT_CALLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2")


def calls_named(calls: dict[str, int], names: tuple[str, ...]) -> int:
    return sum(calls.get(name, 0) for name in names)


def traced_child(strace_pid: int) -> int:
    """The server strace started (``proc(5)``: ``task/TID/children``)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.02)
    raise AssertionError("strace started no server")


# Calls strace sees that the counters leave out on purpose (servers/counters.py): the
# wake-up pair's send from the SIGTERM handler and its recv (data, then EAGAIN); and the
# wait the signal interrupts, which CPython makes again after the handler (PEP 475).
WAKE_TOLERANCE = 4
SIGNAL_RETRIES = 1


@pytest.mark.parametrize("backend", ["epoll-lt", "epoll-et"])
def test_counters_agree_with_strace(backend: str, tmp_path: Path) -> None:
    strace = require_tool("strace")
    require_backend(backend)
    out = tmp_path / "strace.txt"
    server = ServerProcess(backend, "echo")
    server.argv = [strace, "-f", "-c", "-o", str(out), *server.argv]
    server.start()
    try:
        echo_requests(server.address)
        time.sleep(0.2)  # let the closes be read: the count below includes them either way
        os.kill(traced_child(server.pid), signal.SIGTERM)  # the server, not strace
        final = server.stop()
    finally:
        server.stop()
    assert final is not None, server.stderr
    calls = strace_counts(out)
    requests = CONNECTIONS * REQUESTS_PER_CONNECTION
    assert final["bytes_in"] == requests * MSG_BYTES
    # Exact: nothing else in the process accepts or changes epoll interest.
    assert calls_named(calls, ACCEPT_CALLS) == final["accepts"] + final["accepts_eagain"]
    assert calls.get("epoll_ctl", 0) == final["ctl_calls"]
    # Within the signal's and the wake-up pair's few calls.
    waits = final["wait_calls"]
    assert waits <= calls_named(calls, WAIT_CALLS) <= waits + SIGNAL_RETRIES
    recvs = calls.get("recvfrom", 0)
    reads = final["reads"] + final["reads_eagain"]
    assert reads <= recvs <= reads + WAKE_TOLERANCE
    sends = calls.get("sendto", 0) + calls.get("sendmsg", 0)
    writes = final["writes"] + final["writes_eagain"]
    assert writes <= sends <= writes + WAKE_TOLERANCE
