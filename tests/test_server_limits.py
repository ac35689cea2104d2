"""Hostile clients against a running ``muxlab serve``: each is stopped by a limit and ends
at most its own connection. Every test asserts on bytes and counters, never on time."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

import pytest

from servers.process import ServerProcess
from servers.protocols import HTTP_BAD_REQUEST, HTTP_BODY, HTTP_REQUEST_TIMEOUT
from tests.clients import echo_chunks, http_exchange, recv_exactly, recv_until_eof
from tests.conftest import ServerFactory
from tests.test_server_contract import wait_for

Connect = Callable[..., socket.socket]
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def counters_add_up(counters: dict[str, int]) -> bool:
    return counters["connections_accepted"] == (
        counters["connections_closed"] + counters["connections_open"]
    )


def assert_serves_http(server: ServerProcess, connect: Connect) -> None:
    sock = connect(server.address, timeout_s=0.5)
    assert http_exchange(sock, GET).endswith(HTTP_BODY)


# -- HTTP requests that must get 400, against a running server ------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 0\r\n\r\nGET",
    ],
    ids=["5000-digit-content-length", "duplicate-content-length"],
)
def test_http_content_length_attacks_get_400_and_the_server_serves_others(
    backend: str, start_server: ServerFactory, connect: Connect, head: bytes
) -> None:
    server = start_server(backend, "http")
    bystander = connect(server.address, timeout_s=0.5)
    assert http_exchange(bystander, GET).endswith(HTTP_BODY)
    attacker = connect(server.address, timeout_s=5)
    attacker.sendall(head)
    assert recv_until_eof(attacker) == HTTP_BAD_REQUEST  # 400, then closed
    assert http_exchange(bystander, GET).endswith(HTTP_BODY)  # same connection, still open
    assert server.returncode is None
    assert_serves_http(server, connect)
    assert counters_add_up(server.counters())


# -- timeouts -------------------------------------------------------------------------------


def test_header_timeout_sends_408_and_closes_a_stalled_or_dripping_head(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    server = start_server(backend, "http", extra_args=["--header-timeout", "0.3"])
    stalled = connect(server.address, timeout_s=10)
    stalled.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert recv_until_eof(stalled) == HTTP_REQUEST_TIMEOUT
    # A slowloris keeps sending, one byte at a time; the head still never completes.
    dripping = connect(server.address, timeout_s=0.05)
    received = b""
    for byte in b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 400:
        try:
            dripping.sendall(bytes([byte]))
            received += dripping.recv(4096)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if received.endswith(HTTP_REQUEST_TIMEOUT):
            break
    assert received == HTTP_REQUEST_TIMEOUT
    counters = server.counters()
    assert counters["errors"]["header_timeout"] == 2
    assert counters_add_up(counters)


def test_header_timeout_spares_keep_alive_connections_between_requests(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    server = start_server(backend, "http", extra_args=["--header-timeout", "0.2"])
    sock = connect(server.address, timeout_s=0.5)
    assert http_exchange(sock, GET).endswith(HTTP_BODY)
    # Several sweeps pass while the connection holds no unfinished request.
    assert not wait_for(lambda: server.counters()["connections_open"] == 0, timeout_s=1.0)
    assert http_exchange(sock, GET).endswith(HTTP_BODY)
    assert "header_timeout" not in server.counters()["errors"]


def test_idle_timeout_closes_quiet_connections_only_when_asked(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    default = start_server(backend, "echo")
    kept = connect(default.address)
    timed = start_server(backend, "echo", extra_args=["--idle-timeout", "0.3"])
    quiet = connect(timed.address, timeout_s=10)
    assert recv_until_eof(quiet) == b""  # closed by the server after 0.3 s of silence
    counters = timed.counters()
    assert counters["errors"]["idle_timeout"] == 1
    assert counters["connections_open"] == 0
    # The default keeps idle connections: they are what the lab measures.
    assert echo_chunks(kept, [b"still here"]) == b"still here"
    assert "idle_timeout" not in default.counters()["errors"]


# -- the connection cap ---------------------------------------------------------------------


def test_connections_past_the_cap_are_accepted_and_closed_at_once(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    server = start_server(backend, "echo", extra_args=["--max-connections", "5"])
    held = [connect(server.address) for _ in range(5)]
    for sock in held:
        assert echo_chunks(sock, [b"in"]) == b"in"
    for _ in range(3):
        over = connect(server.address)
        # Closed at once, not left in the backlog (a reset is a close too).
        with contextlib.suppress(ConnectionResetError):
            assert over.recv(1) == b""
    counters = server.counters()
    assert counters["errors"]["over_max_connections"] == 3
    assert counters["connections_open"] == 5
    held.pop().close()
    assert wait_for(lambda: server.counters()["connections_open"] == 4)
    assert echo_chunks(connect(server.address), [b"room again"]) == b"room again"
    assert counters_add_up(server.counters())


# -- the server-wide output bound -----------------------------------------------------------


def test_total_queued_output_is_bounded_and_drains_byte_for_byte(
    backend: str, start_server: ServerFactory, connect: Connect
) -> None:
    bound, read_bytes, clients = 256 * 1024, 16384, 6
    server = start_server(
        backend, "echo",
        extra_args=["--max-output-bytes", str(bound), "--read-bytes", str(read_bytes),
                    "--high-water", str(64 << 20), "--low-water", str(1 << 20)],
    )  # fmt: skip
    hogs = [connect(server.address) for _ in range(clients)]
    block = os.urandom(65536)
    sent = [0] * clients
    for hog in hogs:
        hog.setblocking(False)
    stuck_since: float | None = None
    # Every hog sends and never reads, until the kernel refuses all of them for a while:
    # the server stopped reading them, and every buffer on the way is full.
    while stuck_since is None or time.monotonic() - stuck_since < 0.5:
        progressed = False
        for i, hog in enumerate(hogs):
            try:
                sent[i] += hog.send(block[sent[i] % 65536 :])
                progressed = True
            except BlockingIOError:
                pass
        if progressed:
            stuck_since = None
        else:
            stuck_since = stuck_since or time.monotonic()
            time.sleep(0.01)
        assert sum(sent) < 1 << 30, "the server kept reading clients that never read"
    counters = server.counters()
    assert counters["output_pauses"] >= 1
    # The bound, plus at most one read's reply from each connection that began queuing
    # once the bound was passed (it is paused right after that read).
    assert counters["peak_total_output_bytes"] <= bound + clients * read_bytes
    assert_serves_echo = connect(server.address)
    assert echo_chunks(assert_serves_echo, [b"still served"]) == b"still served"
    # A client that starts reading late, with a small receive buffer, while the hogs keep
    # the total over the bound: its replies queue, it is paused, and reading it resumes
    # each time its own queue empties, so its whole echo comes back.
    paused_before = server.counters()["output_pauses"]
    slow_reader = socket.socket()
    slow_reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_reader.settimeout(10)
    slow_reader.connect(server.address)
    payload = os.urandom(8 << 20)
    sender = threading.Thread(target=slow_reader.sendall, args=(payload,), daemon=True)
    sender.start()
    try:
        time.sleep(0.5)  # not asserted: lets the server queue replies it cannot send yet
        assert recv_exactly(slow_reader, len(payload)) == payload
    finally:
        sender.join(timeout=10)
        slow_reader.close()
    assert server.counters()["output_pauses"] > paused_before
    # Each hog drains: every byte comes back, in order.
    results: dict[int, bytes] = {}

    def drain(i: int) -> None:
        hogs[i].setblocking(True)
        hogs[i].settimeout(20)
        results[i] = recv_exactly(hogs[i], sent[i])

    readers = [threading.Thread(target=drain, args=(i,)) for i in range(clients)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=30)
    for i in range(clients):
        assert results.get(i) == (block * (sent[i] // 65536 + 1))[: sent[i]], f"hog {i}"
    assert counters_add_up(server.counters())


# -- the ET read budget ---------------------------------------------------------------------


def test_et_read_budget_lets_a_normal_client_through_a_flood(
    start_server: ServerFactory, connect: Connect
) -> None:
    server = start_server(
        "epoll-et", "echo", extra_args=["--et-read-budget", "65536", "--read-bytes", "65536"]
    )
    flooder = connect(server.address)
    stop = threading.Event()
    sent_all = threading.Event()  # set once flooded[0] is final
    flooded = [0, 0]  # bytes sent, bytes read back

    def flood_send() -> None:
        block = b"f" * 65536
        deadline = time.monotonic() + 20  # bounded, even if the test fails early
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                flooder.sendall(block)
                flooded[0] += len(block)
        finally:
            sent_all.set()

    def flood_read() -> None:
        # Read until the sender has finished and every byte it sent came back. Checking
        # ``stop`` instead would race with a sendall that has not yet added its block.
        while not (sent_all.is_set() and flooded[1] >= flooded[0]):
            chunk = flooder.recv(1 << 20)
            if not chunk:
                return
            flooded[1] += len(chunk)

    threads = [threading.Thread(target=flood_send), threading.Thread(target=flood_read)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: flooded[1] > 4 << 20)  # the flood is on
        normal = connect(server.address)
        for i in range(20):
            msg = b"normal %d" % i
            assert echo_chunks(normal, [msg]) == msg
        assert server.counters()["read_budget_stops"] > 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert flooded[1] == flooded[0]  # the flooder got every byte back, too
