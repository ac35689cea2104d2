"""``muxlab load --protocol http`` against any HTTP/1.1 server: stub servers that close,
chunk, fail and speak HTTP/1.0, and every server the project can start."""

from __future__ import annotations

import socket
import socketserver
import struct
from collections.abc import Callable, Iterator

import pytest

from loadgen import LoadConfig, LoadResult, run_load
from servers import registry
from servers.backends import BACKEND_NAMES
from servers.peers import nginx_unavailable_reason
from servers.process import ServerProcess
from servers.protocols import HTTP_BODY, HTTP_OK
from tests.conftest import ServerFactory
from tests.http_servers import DefaultKeepaliveNginx, Replier, StubFactory, replier, stub_servers

CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
HTTP10_OK = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"
HTTP10_UNTIL_CLOSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close"


@pytest.fixture
def stub_server() -> Iterator[StubFactory]:
    with stub_servers() as start:
        yield start


def stub_run(port: int, **overrides: object) -> LoadResult:
    options: dict[str, object] = {"port": port, "protocol": "http", "connections": 4,
                                  "processes": 1, "duration_s": 0.5, "warmup_s": 0.1,
                                  "timeout_s": 5.0, **overrides}  # fmt: skip
    return run_load(LoadConfig(**options))  # type: ignore[arg-type]


def assert_clean(result: LoadResult) -> None:
    assert result.errors == {}
    assert result.exit_status == 0
    assert result.requests_ok > 0
    assert result.latency.count == result.requests_ok


# -- graceful closes are reopened, not errors ------------------------------------------------

CLOSE_AFTER = 7


@pytest.mark.parametrize("announced", [True, False], ids=["connection-close", "silent-fin"])
@pytest.mark.parametrize("pipeline", [1, 3])
def test_server_closing_after_n_replies_is_reopened(
    stub_server: StubFactory, announced: bool, pipeline: int
) -> None:
    closing = HTTP_OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)

    def reply(n: int) -> bytes:
        return closing if announced and n == CLOSE_AFTER else HTTP_OK

    port = stub_server(replier(reply, closes_after=lambda n: n == CLOSE_AFTER))
    result = stub_run(port, pipeline=pipeline)
    assert_clean(result)
    # Every connection is reopened after each 7th reply: at least one reopen per 7
    # replies, give or take the connections' last, unfinished round.
    assert result.reconnects >= result.requests_total // CLOSE_AFTER - 4
    assert result.reconnects > 0
    assert result.to_json()["reconnects"] == result.reconnects


def test_server_closing_in_the_middle_of_a_reply_is_an_error(stub_server: StubFactory) -> None:
    def reply(n: int) -> bytes | None:
        return HTTP_OK if n < 3 else HTTP_OK[:40]

    port = stub_server(replier(reply, closes_after=lambda n: n >= 3))
    result = stub_run(port)
    assert result.errors == {"closed_mid_reply": 4}  # each connection once, not reopened
    assert result.reconnects == 0
    assert result.exit_status == 1


def test_server_closing_before_any_reply_is_an_error(stub_server: StubFactory) -> None:
    port = stub_server(replier(lambda n: None))
    result = stub_run(port)
    assert result.errors == {"closed": 4}
    assert result.reconnects == 0
    assert result.exit_status == 1


class ResetsAfterFive(Replier):
    """Five replies, then a reset: SO_LINGER with a zero timeout turns close(2) into a RST
    (socket(7))."""

    def reply(self, n: int) -> bytes:
        return HTTP_OK

    def closes_after(self, n: int) -> bool:
        return n == 5

    def linger_close(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()


def test_reset_after_a_reply_is_an_error(stub_server: StubFactory) -> None:
    result = stub_run(stub_server(ResetsAfterFive))
    assert result.errors == {"reset": 4}
    assert result.reconnects == 0
    assert result.exit_status == 1


# -- framings -------------------------------------------------------------------------------


def split_send(sock: socket.socket, data: bytes) -> None:
    """Byte by byte at the start, so heads and chunk sizes arrive in pieces."""
    for i in range(0, 12):
        sock.sendall(data[i : i + 1])
    sock.sendall(data[12:])


@pytest.mark.parametrize("send", [None, split_send], ids=["whole", "in-pieces"])
def test_chunked_replies(stub_server: StubFactory, send: Callable[..., None] | None) -> None:
    result = stub_run(stub_server(replier(lambda n: CHUNKED_OK, send=send)), pipeline=2)
    assert_clean(result)
    assert result.reconnects == 0


def test_http10_reply_with_length_then_close(stub_server: StubFactory) -> None:
    # HTTP/1.0 without "Connection: keep-alive" ends the connection after each reply.
    result = stub_run(stub_server(replier(lambda n: HTTP10_OK, closes_after=lambda n: True)))
    assert_clean(result)
    assert result.reconnects >= result.requests_total - 4


def test_http10_reply_delimited_by_the_close(stub_server: StubFactory) -> None:
    result = stub_run(
        stub_server(replier(lambda n: HTTP10_UNTIL_CLOSE, closes_after=lambda n: True))
    )
    assert_clean(result)
    assert result.reconnects >= result.requests_total - 4


@pytest.mark.parametrize("status", [b"404 Not Found", b"500 Internal Server Error"])
def test_non_2xx_is_counted(stub_server: StubFactory, status: bytes) -> None:
    bad = HTTP_OK.replace(b"200 OK", status)
    result = stub_run(stub_server(replier(lambda n: HTTP_OK if n < 4 else bad)))
    assert result.errors == {"http_status": 4}
    assert result.exit_status == 1


def test_method_path_and_headers_are_sent(stub_server: StubFactory) -> None:
    seen: list[bytes] = []

    class Recorder(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            head = b""
            while b"\r\n\r\n" not in head:
                data = self.request.recv(65536)
                if not data:
                    return
                head += data
            seen.append(head.split(b"\r\n\r\n")[0])
            self.request.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    port = stub_server(Recorder)
    result = stub_run(port, connections=1, method="DELETE", path="/a/b?c=1",
                      headers=(("X-One", "1"), ("Host", "example.test")))  # fmt: skip
    assert result.errors == {}
    assert seen[0] == b"DELETE /a/b?c=1 HTTP/1.1\r\nX-One: 1\r\nHost: example.test"


# -- every server the project can start -------------------------------------------------------


def _server_params() -> list[object]:
    params: list[object] = [pytest.param(("backend", name), id=name) for name in BACKEND_NAMES]
    for name in registry.names("python peer"):
        reason = registry.get(name).unavailable_reason("http")
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(("peer", name), marks=marks, id=name))
    reason = nginx_unavailable_reason()
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    params.append(pytest.param(("nginx", "nginx"), marks=marks, id="nginx-default-keepalive"))
    return params


@pytest.fixture(params=_server_params())
def any_http_server(
    request: pytest.FixtureRequest, start_server: ServerFactory
) -> Iterator[ServerProcess | DefaultKeepaliveNginx]:
    kind, name = request.param
    if kind == "backend":
        yield start_server(name, "http")
    elif kind == "peer":
        with ServerProcess(name, "http", command=("-m", "servers.peers"),
                           impl_option="--impl") as peer:  # fmt: skip
            yield peer
    else:
        with DefaultKeepaliveNginx("http") as nginx:
            yield nginx


def test_every_project_server_is_driven_without_errors(
    any_http_server: ServerProcess | DefaultKeepaliveNginx,
) -> None:
    result = stub_run(any_http_server.port, connections=20, pipeline=2, duration_s=1.0)
    assert_clean(result)
    if isinstance(any_http_server, DefaultKeepaliveNginx):
        # 1000 requests per connection, then nginx closes it: reopened, not an error.
        assert result.reconnects >= result.requests_total // 1000 - 20
    else:
        assert result.reconnects == 0
    assert HTTP_BODY  # the body every project server sends, nginx included
