"""The hand-written HTTP/1.1 request parser muxlab used before it chose httptools, with the
hardening issue 9 asked for (repeated Content-Length, obs-fold, bare CR/LF, NUL, control
bytes, header count). Kept only as the reference :mod:`benchmarks.test_http_parse` measures
httptools against; the server runs :class:`servers.protocols.HttpSession`.
"""

from __future__ import annotations

import re

from servers.protocols import (
    HTTP_BAD_REQUEST,
    HTTP_OK,
    HTTP_OK_CLOSE,
    HTTP_REQUEST_TIMEOUT,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
)


class HandWrittenHttpSession:
    """HTTP/1.1 with keep-alive and pipelining; any well-formed request gets ``HTTP_OK``.

    Enough of RFC 9112 for load tools such as wrk: request line and header syntax are
    checked, ``Content-Length`` bodies are skipped, HTTP/1.0 and ``Connection: close`` end
    the connection after the reply, and anything malformed, ambiguous or oversized gets
    400 and a close. Replies to pipelined requests go out in request order, in one send.
    """

    __slots__ = (
        "_max_headers", "_pending", "_skip_body_bytes", "attention", "partial_seq",
        "wants_close",
    )  # fmt: skip

    def __init__(self, max_headers: int = MAX_HEADERS) -> None:
        self._max_headers = max_headers
        self._pending = b""
        self._skip_body_bytes = 0
        self.wants_close = False
        self.attention = False
        self.partial_seq = 0

    def data_received(self, data: bytes) -> bytes:
        if self.wants_close:
            return b""
        pending = self._pending
        buf = pending + data if pending else data
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
            verdict = _parse_head(buf[start:end], self._max_headers)
            if verdict is None:
                return self._reject(replies)
            body_bytes, keep_alive = verdict
            replies += 1
            start = end + 4 + body_bytes
            if not keep_alive:
                self.wants_close = self.attention = True
                self._pending = b""
                return HTTP_OK * (replies - 1) + HTTP_OK_CLOSE
        if start > len(buf):
            self._skip_body_bytes = start - len(buf)
            start = len(buf)
        rest = buf[start:] if start else buf
        self._pending = rest
        if rest or self._skip_body_bytes:
            self._note_unfinished(new_request=bool(replies))
            if len(rest) > MAX_HEAD_BYTES:
                return self._reject(replies)
        elif self.attention:
            self.attention = False
        return HTTP_OK * replies

    def _note_unfinished(self, new_request: bool) -> None:
        if new_request or not self.attention:
            self.partial_seq += 1
        self.attention = True

    def timed_out(self) -> bytes:
        self.wants_close = self.attention = True
        self._pending = b""
        return HTTP_REQUEST_TIMEOUT

    def _reject(self, replies: int) -> bytes:
        self.wants_close = self.attention = True
        self._pending = b""
        return HTTP_OK * replies + HTTP_BAD_REQUEST


# RFC 9110 5.6.2: a field name is a token.
_HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
# Anything that makes two parsers disagree on where a line ends (RFC 9112 2.2, 5.2):
# a control byte other than HTAB (NUL included), a bare CR, a bare LF, and obs-fold
# (a line that starts with SP or HTAB continues the previous one in old parsers).
_AMBIGUOUS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n|\n[ \t]")
_METHOD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
# 18 digits is about 10**18 bytes, far beyond any body; more digits would also meet
# CPython's limit on int() of long digit strings (a ValueError, not a verdict).
MAX_CONTENT_LENGTH_DIGITS = 18


def _parse_head(head: bytes, max_headers: int = MAX_HEADERS) -> tuple[int, bool] | None:
    """``(body_bytes, keep_alive)`` for a valid request head, ``None`` for a malformed one."""
    while head.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before a request
        head = head[2:]
    if _AMBIGUOUS.search(head) is not None:
        return None
    request_line, _, header_block = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if not method or not _METHOD_CHARS.issuperset(method) or not target or b"\t" in target:
        return None
    if version == b"HTTP/1.1":
        keep_alive = True
    elif version == b"HTTP/1.0":
        keep_alive = False
    else:
        return None
    if not header_block:
        return 0, keep_alive
    lines = header_block.split(b"\r\n")
    if len(lines) > max_headers:
        return None
    body_bytes = -1
    for line in lines:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return None
        name = match[1].lower()
        if name == b"content-length":
            value = match[2]
            # Repeated or conflicting lengths are how requests get smuggled (RFC 9112
            # 6.3): refuse them all rather than choose one.
            if body_bytes >= 0 or not value.isdigit() or len(value) > MAX_CONTENT_LENGTH_DIGITS:
                return None
            body_bytes = int(value)
        elif name == b"transfer-encoding":
            return None  # chunked bodies are out of scope: refuse rather than misframe
        elif name == b"connection":
            token = match[2].lower()
            if token == b"close":
                keep_alive = False
            elif token == b"keep-alive":
                keep_alive = True
    return max(body_bytes, 0), keep_alive
