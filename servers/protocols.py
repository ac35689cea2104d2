"""What the server says back: ``echo`` and a minimal HTTP/1.1 keep-alive responder.

A protocol is a factory of per-connection sessions. The event loop hands each session the
bytes it read and sends whatever the session returns; when ``wants_close`` becomes true it
closes the connection once that reply is flushed. Sessions never touch sockets, so every
backend runs exactly the same protocol code.
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args

ProtocolName = Literal["echo", "http"]
PROTOCOL_NAMES: tuple[ProtocolName, ...] = get_args(ProtocolName)

# Request heads larger than this get 400 (nginx's default large_client_header_buffers
# is 8 KiB per line; one limit for the whole head is enough here).
MAX_HEAD_BYTES = 8192

HTTP_BODY = b"Hello from muxlab\n"
HTTP_OK = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
    b"\r\n" + HTTP_BODY
)
HTTP_OK_CLOSE = HTTP_OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
HTTP_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 12\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"bad request\n"
)


class Session(Protocol):
    wants_close: bool

    def data_received(self, data: bytes) -> bytes:
        """Consume ``data``; return the bytes to send back (possibly empty)."""
        ...


class EchoSession:
    """Every byte back, in order. Stateless, so one instance serves every connection."""

    __slots__ = ()
    wants_close = False

    def data_received(self, data: bytes) -> bytes:
        return data


_ECHO = EchoSession()


class HttpSession:
    """HTTP/1.1 with keep-alive and pipelining; any well-formed request gets ``HTTP_OK``.

    Enough of RFC 9112 for load tools such as wrk: request line and header syntax are
    checked, ``Content-Length`` bodies are skipped, HTTP/1.0 and ``Connection: close`` end
    the connection after the reply, and anything malformed or oversized gets 400 and a
    close. Replies to pipelined requests go out in request order, in one send.
    """

    __slots__ = ("_pending", "_skip_body_bytes", "wants_close")

    def __init__(self) -> None:
        self._pending = b""
        self._skip_body_bytes = 0
        self.wants_close = False

    def data_received(self, data: bytes) -> bytes:
        if self.wants_close:
            return b""
        buf = self._pending + data if self._pending else data
        start = 0
        if self._skip_body_bytes:
            start = min(self._skip_body_bytes, len(buf))
            self._skip_body_bytes -= start
        replies = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            if end - start > MAX_HEAD_BYTES:
                return self._reject(replies)
            verdict = _parse_head(buf[start:end])
            if verdict is None:
                return self._reject(replies)
            body_bytes, keep_alive = verdict
            replies += 1
            start = end + 4 + body_bytes
            if not keep_alive:
                self.wants_close = True
                self._pending = b""
                return HTTP_OK * (replies - 1) + HTTP_OK_CLOSE
        if start > len(buf):
            self._skip_body_bytes = start - len(buf)
            start = len(buf)
        self._pending = buf[start:]
        if len(self._pending) > MAX_HEAD_BYTES:
            return self._reject(replies)
        return HTTP_OK * replies

    def _reject(self, replies: int) -> bytes:
        self.wants_close = True
        self._pending = b""
        return HTTP_OK * replies + HTTP_BAD_REQUEST


_METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse_head(head: bytes) -> tuple[int, bool] | None:
    """``(body_bytes, keep_alive)`` for a valid request head, ``None`` for a malformed one."""
    head = head.lstrip(b"\r\n")  # RFC 9112 2.2: ignore empty lines before a request line
    request_line, _, header_block = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not method or not _METHOD_CHARS.issuperset(method) or not target:
        return None
    if version == b"HTTP/1.1":
        keep_alive = True
    elif version == b"HTTP/1.0":
        keep_alive = False
    else:
        return None
    body_bytes = 0
    if header_block:
        for line in header_block.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                return None
            name = name.lower()
            if name == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    return None
                body_bytes = int(value)
            elif name == b"transfer-encoding":
                return None  # chunked bodies are out of scope: refuse rather than misframe
            elif name == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
    return body_bytes, keep_alive


class SessionFactory(Protocol):
    def __call__(self) -> Session: ...


def _echo_session() -> Session:
    return _ECHO


PROTOCOLS: dict[ProtocolName, SessionFactory] = {
    "echo": _echo_session,
    "http": HttpSession,
}
