"""The server contract, run against a real ``muxlab serve`` child for every backend."""

from __future__ import annotations

import itertools
import os
import random
import resource
import selectors
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers.backends import BACKENDS, brings_own_loop
from servers.process import ServerProcess
from tests.clients import echo_chunks, recv_exactly, recv_until_eof
from tests.conftest import ServerFactory

Connect = Callable[..., socket.socket]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds; tests assert on the state, never on the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def echo_server(backend: str, start_server: ServerFactory) -> ServerProcess:
    return start_server(backend, "echo")


# -- echo ----------------------------------------------------------------------------------


@st.composite
def chunked_payloads(draw: st.DrawFn) -> list[bytes]:
    size = draw(st.one_of(st.integers(1, 4096), st.integers(4097, 4 << 20)))
    seed = draw(st.integers(0, 2**32 - 1))
    payload = random.Random(seed).randbytes(size)
    cuts = sorted(draw(st.lists(st.integers(1, max(1, size - 1)), max_size=20)))
    bounds = [0, *[c for c in cuts if 0 < c < size], size]
    return [payload[i:j] for i, j in itertools.pairwise(bounds) if j > i]


def test_echo_is_byte_exact_for_any_size_and_chunking(
    echo_server: ServerProcess, connect: Connect
) -> None:
    # One connection for all examples: the server must keep a connection's stream exact
    # across messages, not just within one.
    sock = connect(echo_server.address)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(chunks=chunked_payloads())
    def check(chunks: list[bytes]) -> None:
        assert echo_chunks(sock, chunks) == b"".join(chunks)

    check()
    assert echo_chunks(sock, [b"\0" * (4 << 20)]) == b"\0" * (4 << 20)


def test_200_concurrent_clients_each_get_their_own_bytes(
    echo_server: ServerProcess, connect: Connect
) -> None:
    clients = [connect(echo_server.address) for _ in range(200)]
    rounds = 5
    sel = selectors.DefaultSelector()
    expected: dict[int, bytes] = {}
    received: dict[int, bytearray] = {}
    for cid, sock in enumerate(clients):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, cid)
        received[cid] = bytearray()
        expected[cid] = b""
    for r in range(rounds):
        order = list(range(200))
        random.Random(r).shuffle(order)  # interleave the clients differently each round
        for cid in order:
            msg = struct.pack("!HH", cid, r) + bytes([cid % 251]) * (1 + (cid * 37 + r) % 3000)
            _send_all_nonblocking(clients[cid], msg)
            expected[cid] += msg
    total = sum(len(v) for v in expected.values())
    deadline = time.monotonic() + 30
    while sum(len(v) for v in received.values()) < total and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
            assert chunk, f"client {key.data} was disconnected"
            received[key.data] += chunk
    sel.close()
    assert {cid: bytes(buf) for cid, buf in received.items()} == expected


def _send_all_nonblocking(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            time.sleep(0.001)


def test_half_close_gets_every_byte_then_eof(echo_server: ServerProcess, connect: Connect) -> None:
    sock = connect(echo_server.address)
    payload = os.urandom(300_000)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    assert recv_until_eof(sock) == payload
    assert wait_for(lambda: echo_server.counters()["connections_open"] == 0)


def test_reset_mid_message_affects_only_that_connection(
    echo_server: ServerProcess, connect: Connect
) -> None:
    bystander = connect(echo_server.address)
    assert echo_chunks(bystander, [b"before"]) == b"before"
    for _ in range(20):
        victim = connect(echo_server.address)
        victim.sendall(os.urandom(200_000))  # more than one read's worth is in flight
        # SO_LINGER with a zero timeout turns close() into a reset (RST), socket(7).
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()
    assert echo_chunks(bystander, [b"after" * 1000]) == b"after" * 1000
    assert wait_for(lambda: echo_server.counters()["connections_open"] == 1)
    counters = echo_server.counters()
    assert counters["connections_closed"] == 20
    assert echo_server.returncode is None


def test_client_that_never_reads_is_bounded_by_backpressure(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    high_water = 256 * 1024
    server = start_server(
        backend, "echo", extra_args=["--high-water", str(high_water), "--low-water", "65536"]
    )
    hog = connect(server.address)
    hog.setblocking(False)
    sent = 0
    block = os.urandom(65536)
    stuck_since: float | None = None
    # Send until the kernel refuses for a while: server paused reading, all buffers full.
    while stuck_since is None or time.monotonic() - stuck_since < 0.5:
        try:
            sent += hog.send(block[sent % 65536 :])
            stuck_since = None
        except BlockingIOError:
            stuck_since = stuck_since or time.monotonic()
            time.sleep(0.01)
        assert sent < 256 << 20, "the server kept reading from a client that never reads"
    counters = server.counters()
    assert counters["read_pauses"] >= 1
    assert counters["peak_output_bytes"] <= high_water + 65536  # bound + one read
    assert counters["bytes_in"] < sent  # the rest waits in kernel buffers, not the server
    other = connect(server.address)
    assert echo_chunks(other, [b"still served"]) == b"still served"
    # The hog drains: every byte comes back, in order, and reading resumed.
    hog.setblocking(True)
    hog.settimeout(10)
    expected = (block * (sent // 65536 + 1))[:sent]
    assert recv_exactly(hog, sent) == expected
    assert server.counters()["bytes_in"] == sent + len(b"still served")


def test_wait_calls_stay_quiet_while_connections_idle(echo_server: ServerProcess) -> None:
    """Write interest only while output is pending: idle LT sockets must not wake the loop."""
    socks = []
    for _ in range(10):
        # A tiny receive buffer forces partial writes, so every connection needed write
        # interest at some point and must have dropped it once its output was flushed.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(echo_server.address)
        socks.append(sock)
        sender = threading.Thread(target=sock.sendall, args=(b"x" * 4_000_000,))
        sender.start()
        time.sleep(0.05)  # let the server's send buffer fill before reading anything
        assert recv_exactly(sock, 4_000_000) == b"x" * 4_000_000
        sender.join()
    counters = echo_server.counters()
    assert counters["partial_writes"] + counters["writes_eagain"] > 0
    time.sleep(0.3)
    assert echo_server.counters()["wait_calls"] - counters["wait_calls"] <= 2
    for sock in socks:
        sock.close()


# -- descriptor ceilings and exhaustion ----------------------------------------------------


def test_more_than_fd_setsize_connections(echo_server: ServerProcess, backend: str) -> None:
    """poll and epoll serve 1,100 connections; select closes the ones past 1024 only."""
    n = 1100
    clients: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.create_connection(echo_server.address, timeout=10)
            clients.append(sock)
        served = closed = 0
        for i, sock in enumerate(clients):
            msg = b"%06d" % i
            try:
                sock.sendall(msg)
                reply = recv_exactly(sock, len(msg))
            except (ConnectionResetError, BrokenPipeError):
                reply = b""
            if reply == msg:
                served += 1
            else:
                assert reply == b"", f"connection {i} got someone else's bytes: {reply!r}"
                closed += 1
        counters = echo_server.counters()
        if backend == "select":
            assert closed > 0
            assert counters["errors"].get("fd_over_ceiling") == closed
            assert served >= 1000
        else:
            assert closed == 0
        assert served + closed == n
        assert echo_server.returncode is None
    finally:
        for sock in clients:
            sock.close()


def test_out_of_descriptors_pauses_accept_and_recovers(
    echo_server: ServerProcess, connect: Connect
) -> None:
    # Leave the server a handful of spare descriptors above what it holds now.
    open_fds = len(os.listdir(f"/proc/{echo_server.pid}/fd"))
    limit = open_fds + 5
    resource.prlimit(echo_server.pid, resource.RLIMIT_NOFILE, (limit, limit))
    clients = [connect(echo_server.address) for _ in range(12)]  # kernel backlog holds them
    assert wait_for(lambda: echo_server.counters()["connections_open"] == 5)
    counters = echo_server.counters()
    waits_before = counters["wait_calls"]
    time.sleep(0.5)
    # Paused, not spinning: retries every 0.1 s, so a handful of waits, not thousands.
    assert echo_server.counters()["wait_calls"] - waits_before < 30
    assert sum("accept failed" in line for line in echo_server.stderr.splitlines()) == 1
    served = clients[:5]
    assert echo_chunks(served[0], [b"alive"]) == b"alive"
    for sock in served:
        sock.close()
    # Descriptors freed: the waiting clients are accepted and served, in any order.
    for sock in clients[5:10]:
        assert echo_chunks(sock, [b"late"]) == b"late"
    assert echo_server.counters()["connections_accepted"] >= 10


# -- lifecycle -----------------------------------------------------------------------------


def test_sigterm_exits_zero_and_prints_counters(
    echo_server: ServerProcess, connect: Connect
) -> None:
    sock = connect(echo_server.address)
    assert echo_chunks(sock, [b"hello"]) == b"hello"
    final = echo_server.stop()
    assert echo_server.returncode == 0
    assert final is not None
    assert final["bytes_in"] == final["bytes_out"] == 5
    assert final["connections_accepted"] == 1
    assert "muxlab: final counters" in echo_server.stderr


def test_edge_triggered_drains_until_eagain_level_triggered_does_not(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    """And a completion loop never meets EAGAIN at all."""
    server = start_server(backend, "echo", extra_args=["--read-bytes", "1024"])
    sock = connect(server.address)
    assert echo_chunks(sock, [b"m" * 200_000]) == b"m" * 200_000
    counters = server.counters()
    assert counters["reads"] >= 200_000 // 1024
    if brings_own_loop(backend):  # type: ignore[arg-type]
        # Completion: the kernel waits for data itself; many receives per wake-up.
        assert counters["reads_eagain"] == 0
        assert counters["reads"] > counters["wait_calls"]
    elif BACKENDS[backend].edge_triggered:  # type: ignore[index]
        # Every read event ends with the call that said EAGAIN.
        assert counters["reads_eagain"] >= 1
        assert counters["reads"] > counters["wait_calls"]  # several reads per wake-up
    else:
        # One read per event: the kernel re-reports what is left, so no read meets EAGAIN.
        assert counters["reads_eagain"] == 0
        assert counters["wait_calls"] >= counters["reads"] // 2


def test_a_burst_of_connections_is_accepted_in_few_wake_ups(
    echo_server: ServerProcess, backend: str
) -> None:
    """ET drains the backlog; LT takes a bounded batch; neither needs a wait per accept."""
    before = echo_server.counters()
    # Stopped, the server cannot accept; the kernel completes the handshakes into the
    # backlog, so all 200 are pending when it resumes.
    os.kill(echo_server.pid, signal.SIGSTOP)
    try:
        burst = [socket.create_connection(echo_server.address, timeout=10) for _ in range(200)]
    finally:
        os.kill(echo_server.pid, signal.SIGCONT)
    try:
        assert wait_for(lambda: echo_server.counters()["connections_open"] == 200)
        after = echo_server.counters()
        assert after["accepts"] == 200
        if brings_own_loop(backend):  # type: ignore[arg-type]
            # Completion: a multishot accept posts the whole backlog; no accept of ours
            # meets EAGAIN. Each counters() call above costs one wake-up of its own.
            assert after["accepts_eagain"] == 0
            assert after["wait_calls"] - before["wait_calls"] < 50
            return
        # ET: one batch to EAGAIN; LT: batches of 64, the last one ending at EAGAIN. One
        # accept per wake-up would never meet EAGAIN under LT.
        assert 1 <= after["accepts_eagain"] - before["accepts_eagain"] <= 4
    finally:
        for sock in burst:
            sock.close()
