"""Arbitrary bytes, split anywhere, over several connections at once, against one running
server per backend and protocol. After every case: the server is alive, a fresh client is
answered correctly, its open connections and descriptors are back to their baseline, and
its counters add up."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servers.backends import BACKEND_NAMES, BACKENDS
from servers.process import ServerProcess
from servers.protocols import HTTP_BODY, PROTOCOL_NAMES
from tests.clients import recv_until_eof
from tests.test_server_contract import wait_for

# Fragments that steer random bytes towards the parser's corners.
HTTP_FRAGMENTS = [
    b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.0\r\n", b"Host: x\r\n", b"\r\n", b"\r", b"\n",
    b"Content-Length: 5\r\n", b"Content-Length: " + b"9" * 40 + b"\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b" folded\r\n", b"\0",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]  # fmt: skip

CASES_PLAYED: Counter[int] = Counter()  # by server pid
BASELINE_FDS: dict[int, int] = {}  # by server pid, before any client


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


Ending = str  # how a client leaves: "close", "reset" or "half-close"


@dataclass(frozen=True)
class ClientScript:
    chunks: list[bytes]
    ending: Ending


def _params() -> list[object]:
    params: list[object] = []
    for backend in BACKEND_NAMES:
        reason = BACKENDS[backend].unavailable_reason()
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        for protocol in PROTOCOL_NAMES:
            params.append(
                pytest.param((backend, protocol), marks=marks, id=f"{backend}-{protocol}")
            )
    return params


@pytest.fixture(scope="module", params=_params())
def fuzzed_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    backend, protocol = request.param
    with ServerProcess(backend, protocol, extra_args=["--header-timeout", "2"]) as server:
        BASELINE_FDS[server.pid] = open_fds(server.pid)
        yield server


payload = st.lists(
    st.one_of(st.binary(max_size=600), st.sampled_from(HTTP_FRAGMENTS)), max_size=12
).map(b"".join)


@st.composite
def client_scripts(draw: st.DrawFn) -> ClientScript:
    data = draw(payload)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    bounds = [0, *[c for c in cuts if 0 < c < len(data)], len(data)]
    chunks = [data[i:j] for i, j in itertools.pairwise(bounds) if j > i]
    ending = draw(st.sampled_from(["close", "reset", "half-close"]))
    return ClientScript(chunks, ending)


def play(address: tuple[str, int], scripts: list[ClientScript], seed: int) -> list[bytes]:
    """Send every script's chunks, interleaved across connections; end each as told.
    Returns what each half-closing client read back before EOF."""
    socks = [socket.create_connection(address, timeout=5) for _ in scripts]
    replies = [b""] * len(scripts)
    try:
        steps = [(i, chunk) for i, s in enumerate(scripts) for chunk in s.chunks]
        order = sorted(range(len(steps)), key=lambda k: (random.Random(seed + k).random(), k))
        # Keep each connection's own chunks in order while interleaving connections.
        per_conn: dict[int, list[bytes]] = {}
        for i, chunk in steps:
            per_conn.setdefault(i, []).append(chunk)
        for k in order:
            i = steps[k][0]
            if per_conn[i]:
                with contextlib.suppress(OSError):  # the server may have closed it: fine
                    socks[i].sendall(per_conn[i].pop(0))
        for i, script in enumerate(scripts):
            sock = socks[i]
            if script.ending == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif script.ending == "half-close":
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                    replies[i] = recv_until_eof(sock)
    finally:
        for sock in socks:
            sock.close()
    return replies


def fresh_client_is_answered(server: ServerProcess, protocol: str) -> bool:
    with socket.create_connection(server.address, timeout=5) as sock:
        if protocol == "echo":
            sock.sendall(b"ping")
            sock.shutdown(socket.SHUT_WR)
            return recv_until_eof(sock) == b"ping"
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return recv_until_eof(sock).endswith(HTTP_BODY)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(scripts=st.lists(client_scripts(), min_size=1, max_size=6), seed=st.integers(0, 1000))
def check_case(
    server: ServerProcess, protocol: str, scripts: list[ClientScript], seed: int
) -> None:
    CASES_PLAYED[server.pid] += 1
    replies = play(server.address, scripts, seed)
    for script, reply in zip(scripts, replies, strict=True):
        if protocol == "echo" and script.ending == "half-close":
            assert reply == b"".join(script.chunks)  # echo stays byte-exact under fuzz
        if protocol == "http":
            assert reply[:9] in (b"", b"HTTP/1.1 ")
    assert server.returncode is None, server.stderr
    assert fresh_client_is_answered(server, protocol)
    assert wait_for(lambda: server.counters()["connections_open"] == 0)
    assert open_fds(server.pid) == BASELINE_FDS[server.pid]  # no descriptor leaked
    counters = server.counters()
    assert counters["connections_accepted"] == counters["connections_closed"]


def test_arbitrary_bytes_never_take_the_server_down(fuzzed_server: ServerProcess) -> None:
    protocol = fuzzed_server.argv[fuzzed_server.argv.index("--protocol") + 1]
    check_case(fuzzed_server, protocol)
    assert CASES_PLAYED[fuzzed_server.pid] >= 20  # hypothesis did play its cases
    counters = fuzzed_server.counters()
    unexpected = {k for k in counters["errors"] if k.startswith("exception_")}
    assert not unexpected, counters["errors"]  # no parser bug was merely survived
