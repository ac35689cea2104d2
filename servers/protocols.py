"""What the server says back: ``echo`` and a minimal HTTP/1.1 keep-alive responder.

A protocol is a factory of per-connection sessions. The event loop hands each session the
bytes it read and sends whatever the session returns; when ``wants_close`` becomes true it
closes the connection once that reply is flushed. Sessions never touch sockets, so every
backend runs exactly the same protocol code.

HTTP parsing: httptools (llhttp), chosen by measurement (issue 9). A hand-written parser
is where request-smuggling bugs live (duplicate ``Content-Length``, obs-fold, bare CR);
hardened against them, ours cost more than llhttp called through Python callbacks.
Server-side cost per request, the whole ``data_received`` (find the request, frame its
body, keep-alive, header count, build the reply), median of 50 rounds of 1,000 calls on
the 2-CPU development VM, side by side in one run
(``pytest --benchmark-only benchmarks/test_http_parse.py``):

=====================================  ============  =========
request                                hand-written  httptools
=====================================  ============  =========
wrk's ``GET /`` (1 header line)        3.4 us        0.88 us
16 of them pipelined, per request      4.7 us        1.0 us
a browser's request (8 header lines)   23 us         1.8 us
=====================================  ============  =========

(The parser before hardening cost 1.26 us per wrk request, by ``timeit``.) Figures from
a shared, noisy machine: the ratio, about 4x, is what decided, not the microseconds.
"""

from __future__ import annotations

from typing import Protocol

import httptools

# Re-exported: the names the load generator shares (muxlab/protocol_names.py).
from muxlab.protocol_names import PROTOCOL_NAMES as PROTOCOL_NAMES
from muxlab.protocol_names import ProtocolName as ProtocolName

# Request heads larger than this get 400 (nginx's default large_client_header_buffers
# is 8 KiB per line; one limit for the whole head is enough here).
MAX_HEAD_BYTES = 8192
# Header lines per request past which a request gets 400 (``muxlab serve --max-headers``);
# llhttp has no such limit, Go's net/http and nginx bound the head's bytes instead.
MAX_HEADERS = 100

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
HTTP_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 16\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"request timeout\n"
)


class Session(Protocol):
    wants_close: bool
    # True while the loop must look at this session after a read: it wants the
    # connection closed, or it holds part of an unfinished request. One flag, so the
    # request path pays for one attribute test, not two.
    attention: bool
    # Changes whenever a new unfinished request begins, so a periodic sweep can tell a
    # request that stalled from one that finished while another began (header timeout).
    partial_seq: int

    def data_received(self, data: bytes) -> bytes:
        """Consume ``data``; return the bytes to send back (possibly empty)."""
        ...

    def timed_out(self) -> bytes:
        """The request in progress took too long: the reply to send before closing."""
        ...


class EchoSession:
    """Every byte back, in order. Stateless, so one instance serves every connection."""

    __slots__ = ()
    wants_close = False
    attention = False
    partial_seq = 0

    def data_received(self, data: bytes) -> bytes:
        return data

    def timed_out(self) -> bytes:
        return b""


_ECHO = EchoSession()


class HttpSession:
    """HTTP/1.1 with keep-alive and pipelining; any well-formed request gets ``HTTP_OK``.

    llhttp (through httptools) does the parsing, strictly: it refuses repeated or
    conflicting ``Content-Length``, ``Content-Length`` with ``Transfer-Encoding``, lengths
    that overflow 64 bits, obs-fold, a bare CR or LF, NUL and control bytes, and skips
    ``Content-Length`` and chunked bodies. This class adds what llhttp leaves to its
    user: only HTTP/1.0 and 1.1, at most ``max_headers`` header lines, a request head of
    at most ``MAX_HEAD_BYTES`` (llhttp would buffer a never-ending header line), no
    protocol upgrade or CONNECT. Anything refused gets 400 and a close; HTTP/1.0 and
    ``Connection: close`` close after the reply. Replies to pipelined requests go out in
    request order, in one send.
    """

    __slots__ = (
        "_head_bytes", "_headers", "_in_head", "_max_headers", "_parser", "_refused",
        "_replies", "attention", "partial_seq", "wants_close",
    )  # fmt: skip

    def __init__(self, max_headers: int = MAX_HEADERS) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._max_headers = max_headers
        self._headers = 0
        self._in_head = False
        self._head_bytes = 0  # bytes fed since the unfinished head began (upper bound)
        self._replies = 0
        self._refused = False
        self.wants_close = False
        self.attention = False
        self.partial_seq = 0

    # llhttp's callbacks, in the order it calls them for each request.

    def on_message_begin(self) -> None:
        self.attention = self._in_head = True
        self.partial_seq += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        version = self._parser.get_http_version()
        if self._headers > self._max_headers or (version != "1.1" and version != "1.0"):
            self._refused = True
            raise _Refused  # stops llhttp here; data_received answers 400
        self._headers = 0

    def on_message_complete(self) -> None:
        self._replies += 1
        if self._parser.should_keep_alive():
            self.attention = False
        else:
            self.wants_close = True  # llhttp refuses any data after this request

    def data_received(self, data: bytes) -> bytes:
        if self.wants_close:
            return b""
        self._replies = 0
        was_in_head = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade or CONNECT request completed; we do not switch protocols.
            return self._reject(self._replies - 1)
        except httptools.HttpParserError:
            if not self.wants_close or self._refused:
                return self._reject(self._replies)
        replies = self._replies
        if self.wants_close:
            return HTTP_OK * (replies - 1) + HTTP_OK_CLOSE
        if self._in_head and self._head_too_long(data, was_in_head):
            return self._reject(replies)
        return HTTP_OK * replies

    def _head_too_long(self, data: bytes, was_in_head: bool) -> bool:
        """Off the request path: only while a head is unfinished after a read."""
        if was_in_head and not self._replies:
            self._head_bytes += len(data)
        else:
            # The head began in this read, after the last complete head; a body that
            # contains CRLFCRLF can only make this smaller, by less than one read.
            self._head_bytes = len(data) - (data.rfind(b"\r\n\r\n") + 4 if self._replies else 0)
        return self._head_bytes > MAX_HEAD_BYTES

    def timed_out(self) -> bytes:
        self.wants_close = self.attention = True
        return HTTP_REQUEST_TIMEOUT

    def _reject(self, replies: int) -> bytes:
        self.wants_close = self.attention = True
        return HTTP_OK * max(replies, 0) + HTTP_BAD_REQUEST


class _Refused(Exception):
    """Raised from an llhttp callback to stop parsing a request this server refuses."""


class SessionFactory(Protocol):
    def __call__(self, max_headers: int = MAX_HEADERS) -> Session: ...


def _echo_session(max_headers: int = MAX_HEADERS) -> Session:
    return _ECHO


PROTOCOLS: dict[ProtocolName, SessionFactory] = {
    "echo": _echo_session,
    "http": HttpSession,
}
