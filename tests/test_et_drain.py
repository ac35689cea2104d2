"""``--et-drain short-read`` for epoll-et: the contract holds, and it saves the EAGAIN reads.

The contract tests imported below run here again against ``epoll-et --et-drain
short-read`` (this module's ``echo_server`` replaces the contract module's), so the mode
that stops draining early is held to the same bytes as every backend: random chunking,
200 interleaved clients, half-close with data in flight, a reset, a never-reading client.
"""

from __future__ import annotations

import itertools
import random
import selectors
import socket
import subprocess
import sys
import time

import pytest

from servers.loop import ET_DRAINS
from servers.process import ServerProcess
from tests.conftest import ServerFactory, require_backend

# Imported to be collected here, with this module's echo_server.
from tests.test_server_contract import (  # noqa: F401
    test_200_concurrent_clients_each_get_their_own_bytes,
    test_client_that_never_reads_is_bounded_by_backpressure,
    test_echo_is_byte_exact_for_any_size_and_chunking,
    test_half_close_gets_every_byte_then_eof,
    test_more_than_fd_setsize_connections,
    test_reset_mid_message_affects_only_that_connection,
)

CLIENTS = 200
ROUNDS = 5


@pytest.fixture
def backend() -> str:
    return require_backend("epoll-et")


@pytest.fixture
def echo_server(backend: str, start_server: ServerFactory) -> ServerProcess:
    return start_server(backend, "echo", extra_args=["--et-drain", "short-read"])


def chunked_messages(seed: int) -> list[list[bytes]]:
    """Per client, its messages cut at random points (each a list of chunks to send)."""
    rng = random.Random(seed)
    clients: list[list[bytes]] = []
    for cid in range(CLIENTS):
        message = bytes([cid % 251]) * rng.randint(1, 20_000)
        cuts = sorted(rng.sample(range(1, len(message)), min(len(message) - 1, 4)))
        bounds = [0, *cuts, len(message)]
        clients.append([message[a:b] for a, b in itertools.pairwise(bounds)])
    return clients


def echo_workload(address: tuple[str, int], seed: int) -> None:
    """ROUNDS rounds of CLIENTS interleaved clients, each sending its chunked message and
    reading its echo; asserts every client got exactly its own bytes back."""
    socks = [socket.create_connection(address, timeout=10) for _ in range(CLIENTS)]
    try:
        for round_no in range(ROUNDS):
            messages = chunked_messages(seed + round_no)
            order = list(range(CLIENTS))
            random.Random(round_no).shuffle(order)
            for cid in order:
                for chunk in messages[cid]:
                    socks[cid].sendall(chunk)
            received = collect(socks, [sum(map(len, m)) for m in messages])
            assert received == [b"".join(m) for m in messages]
    finally:
        for sock in socks:
            sock.close()


def collect(socks: list[socket.socket], sizes: list[int]) -> list[bytes]:
    received = [bytearray() for _ in socks]
    with selectors.DefaultSelector() as sel:
        for cid, sock in enumerate(socks):
            sel.register(sock, selectors.EVENT_READ, cid)
        deadline = time.monotonic() + 30
        pending = set(range(len(socks)))
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1.0):
                cid = key.data
                chunk = socks[cid].recv(65536)
                assert chunk, f"client {cid} was disconnected"
                received[cid] += chunk
                if len(received[cid]) >= sizes[cid]:
                    pending.discard(cid)
                    sel.unregister(socks[cid])
    return [bytes(r) for r in received]


def test_short_read_makes_fewer_eagain_reads_than_strict_for_the_same_bytes(
    backend: str, start_server: ServerFactory
) -> None:
    eagain: dict[str, int] = {}
    for drain in ET_DRAINS:
        server = start_server(backend, "echo", extra_args=["--et-drain", drain])
        before = server.counters()
        echo_workload(server.address, seed=11)
        after = server.counters()
        assert after["bytes_in"] - before["bytes_in"] == after["bytes_out"] - before["bytes_out"]
        eagain[drain] = after["reads_eagain"] - before["reads_eagain"]
    # Strict ends every drain with an EAGAIN read; short-read only where a read filled the
    # buffer exactly, or data raced the wait (thousands of requests: never close).
    assert eagain["strict"] >= ROUNDS * CLIENTS
    assert eagain["short-read"] < eagain["strict"] // 2


@pytest.mark.parametrize("backend_name", ["epoll-lt", "poll", "io_uring"])
def test_short_read_is_refused_where_it_does_not_apply(backend_name: str) -> None:
    require_backend(backend_name)
    result = subprocess.run(
        [sys.executable, "-m", "muxlab", "serve", "--backend", backend_name,
         "--et-drain", "short-read", "--port", "0"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--et-drain" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
