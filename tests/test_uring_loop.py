"""The io_uring completion loop beyond the shared contract suite: the fallback paths of
kernels before 5.19/6.0, its system call counters, and per-connection isolation."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from servers.loop import ServerConfig
from servers.uring.ring import unavailable_reason
from servers.uring_loop import UringServer
from tests.clients import echo_chunks, recv_exactly, recv_until_eof
from tests.conftest import ServerFactory, require_available
from tests.test_server_isolation import exploding_session

# Single-shot receive into a per-connection buffer, no buffer ring, no
# SINGLE_ISSUER/DEFER_TASKRUN: what a 5.15 kernel gets.
OLD_KERNEL = {**os.environ, "MUXLAB_URING_KERNEL": "5.15"}


@pytest.fixture(autouse=True)
def _io_uring_here() -> None:
    require_available("io_uring", unavailable_reason())


def test_old_kernel_path_echoes_byte_exact_and_half_closes(start_server: ServerFactory) -> None:
    server = start_server("io_uring", "echo", env=OLD_KERNEL)
    clients = [socket.create_connection(server.address, timeout=10) for _ in range(20)]
    try:
        for i, sock in enumerate(clients):
            chunks = [os.urandom(1 + (i * 7919) % 5000) for _ in range(5)]
            assert echo_chunks(sock, chunks) == b"".join(chunks)
        big = os.urandom(3_000_000)  # more than the socket buffers: short sends
        sender = threading.Thread(target=clients[0].sendall, args=(big,))
        sender.start()
        assert recv_exactly(clients[0], len(big)) == big
        sender.join()
        clients[1].sendall(b"last words")
        clients[1].shutdown(socket.SHUT_WR)
        assert recv_until_eof(clients[1]) == b"last words"
    finally:
        for sock in clients:
            sock.close()
    counters = server.counters()
    # Single-shot receives: every receive was one SQE of its own.
    assert counters["uring_sqes"] >= counters["reads"]
    assert counters["errors"] == {}


def test_old_kernel_path_bounds_a_client_that_never_reads(start_server: ServerFactory) -> None:
    high_water = 256 * 1024
    server = start_server(
        "io_uring", "echo", env=OLD_KERNEL,
        extra_args=["--high-water", str(high_water), "--low-water", "65536"],
    )  # fmt: skip
    hog = socket.create_connection(server.address, timeout=10)
    hog.setblocking(False)
    sent = 0
    block = os.urandom(65536)
    stuck_since: float | None = None
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
    assert counters["peak_output_bytes"] <= high_water + 65536
    hog.setblocking(True)
    hog.settimeout(10)
    assert recv_exactly(hog, sent) == (block * (sent // 65536 + 1))[:sent]
    hog.close()


@pytest.mark.parametrize("env", [None, OLD_KERNEL], ids=["multishot", "5.15"])
def test_clients_that_stop_and_resume_reading_get_their_bytes_back_exactly(
    start_server: ServerFactory, env: dict[str, str] | None
) -> None:
    """Under a small total output bound every connection with output is paused (its
    armed receive cancelled) and resumed, over and over; a cancelled receive that still
    completes must neither lose, reorder nor overwrite bytes (on 5.15 every receive of a
    connection reads into the same buffer)."""
    server = start_server(
        "io_uring", "echo", env=env,
        extra_args=["--max-output-bytes", "131072", "--high-water", "65536",
                    "--low-water", "16384"],
    )  # fmt: skip
    clients = [small_receive_buffer_client(server.address) for _ in range(3)]
    # More than the server's socket send buffer can absorb (tcp_wmem's autotuned 4 MiB):
    # the rest queues in the server, past the bound.
    payloads = [os.urandom(8_000_000 + i) for i in range(len(clients))]
    senders = [
        threading.Thread(target=sock.sendall, args=(payload,))
        for sock, payload in zip(clients, payloads, strict=True)
    ]
    try:
        for sender in senders:
            sender.start()
        # Nobody reads until the bound has paused the server's reading (bounded wait).
        deadline = time.monotonic() + 20
        while server.counters()["output_pauses"] == 0:
            assert time.monotonic() < deadline, "the total output bound never paused reading"
            time.sleep(0.05)
        # Then the clients read, one after the other: each read resumes, each burst of
        # echoes past the bound pauses again.
        for sock, payload in zip(clients, payloads, strict=True):
            assert recv_exactly(sock, len(payload)) == payload
    finally:
        for sock in clients:
            sock.close()
        for sender in senders:
            sender.join(20)
    counters = server.counters()
    assert counters["output_pauses"] >= len(clients)
    assert counters["errors"] == {}


def small_receive_buffer_client(address: tuple[str, int]) -> socket.socket:
    """A client whose receive buffer is not autotuned up to megabytes (set before
    connecting, ``tcp(7)``), so what it does not read queues in the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(20)
    sock.connect(address)
    return sock


def test_one_enter_per_loop_turn_counts_every_completion(start_server: ServerFactory) -> None:
    server = start_server("io_uring", "echo")
    with socket.create_connection(server.address, timeout=10) as sock:
        assert echo_chunks(sock, [b"hello"]) == b"hello"  # the receive is armed by now
        before = server.counters()
        for _ in range(50):
            assert echo_chunks(sock, [b"ping" * 256]) == b"ping" * 256
        after = server.counters()
    delta = {k: after[k] - before[k] for k in after if isinstance(after[k], int)}
    assert delta["reads"] >= 50 and delta["writes"] == 50
    # No SQ overflowed: every io_uring_enter was a loop turn's one submit-and-wait.
    assert delta["uring_enters"] == delta["wait_calls"]
    assert delta["uring_cqes"] == delta["events"]
    # One send SQE per reply; the multishot receive needed no SQE at all.
    assert delta["uring_sqes"] == 50
    # One client in lock-step: a turn for the request, a turn for its send's completion,
    # and up to two for the snapshot (the signal interrupts a wait, then the wake-up
    # pair's CQE); a readiness loop makes at least a wait, a recv and a send per request.
    # With many clients one turn carries many of each.
    assert delta["uring_enters"] <= 2 * 50 + 2


class _Running:
    def __init__(self, server: UringServer) -> None:
        self.server = server
        self.failure: BaseException | None = None
        self.snapshots: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:
            self.failure = exc

    def stop(self) -> None:
        self.server.request_stop()
        self._thread.join(10)


def test_an_exception_in_the_protocol_closes_only_that_connection() -> None:
    server = UringServer(ServerConfig(backend="io_uring"), session_factory=exploding_session)
    running = _Running(server)
    try:
        bystander = socket.create_connection(server.address, timeout=10)
        assert echo_chunks(bystander, [b"before"]) == b"before"
        for _ in range(3):
            with socket.create_connection(server.address, timeout=10) as victim:
                victim.sendall(b"boom")
                assert recv_until_eof(victim) == b""  # closed by the server
        assert echo_chunks(bystander, [b"after"]) == b"after"
        bystander.close()
    finally:
        running.stop()
    assert running.failure is None
    counters = server.counters
    assert counters.errors["exception_ValueError"] == 3
    assert counters.connections_accepted == 4
