"""HTTP against a running server: single, pipelined, malformed, and wrk as a real client."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable

import pytest

from servers.process import ServerProcess
from servers.protocols import HTTP_BODY
from tests.clients import http_exchange, split_http_responses
from tests.conftest import ServerFactory, require_tool

Connect = Callable[..., socket.socket]
GET = b"GET /any/path?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def http_server(backend: str, start_server: ServerFactory) -> ServerProcess:
    return start_server(backend, "http")


def test_single_request_keeps_the_connection_open(
    http_server: ServerProcess, connect: Connect
) -> None:
    sock = connect(http_server.address, timeout_s=0.5)
    for _ in range(3):
        assert split_http_responses(http_exchange(sock, GET)) == [(200, HTTP_BODY)]


def test_pipelined_requests_are_answered_in_order(
    http_server: ServerProcess, connect: Connect
) -> None:
    sock = connect(http_server.address, timeout_s=0.5)
    close = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    responses = split_http_responses(http_exchange(sock, GET * 50 + close))
    assert responses == [(200, HTTP_BODY)] * 51


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nbroken header\r\n\r\n",
        b"\x16\x03\x01" * 4000,
    ],
    ids=["request-line", "header", "oversized-binary"],
)
def test_malformed_heads_get_400_and_close(
    http_server: ServerProcess, connect: Connect, garbage: bytes
) -> None:
    sock = connect(http_server.address, timeout_s=2)
    raw = http_exchange(sock, GET + garbage)
    assert [status for status, _ in split_http_responses(raw)] == [200, 400]
    assert sock.recv(1) == b""  # closed by the server
    good = connect(http_server.address, timeout_s=0.5)
    assert split_http_responses(http_exchange(good, GET)) == [(200, HTTP_BODY)]


def test_wrk_drives_the_server_with_no_socket_errors(http_server: ServerProcess) -> None:
    wrk = require_tool("wrk")
    host, port = http_server.address
    out = subprocess.run(
        [wrk, "-t1", "-c50", "-d2s", "--timeout", "2s", f"http://{host}:{port}/"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    assert requests > 0, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    counters = http_server.counters()
    assert counters["connections_accepted"] >= 50  # wrk may probe with one more
    # wrk ends its run by closing connections with replies unread, which is a reset.
    assert set(counters["errors"]) <= {"ECONNRESET"}
