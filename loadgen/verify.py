"""What a correct reply looks like, and what kind of wrong a wrong one is.

Echo: every message is ``connection id (u32 LE) | sequence number (u64 LE) | filler`` and
the reply stream of a connection must be byte for byte the stream it sent. The hot loop
compares whole replies with one ``==``; only when that fails does :func:`classify_echo`
look closer, telling apart a message from another connection (cross-talk), a message of
this connection out of order (reorder), bytes nobody sent (corrupt) and bytes after
everything was answered (unexpected).

HTTP: each reply must be ``HTTP/1.x 200`` framed by ``Content-Length`` (RFC 9112 6.3);
:func:`parse_http_replies` splits a buffer into whole replies and raises on anything else.
The last valid reply is returned so the hot loop can accept identical replies with one
comparison.
"""

from __future__ import annotations

import struct

from loadgen.config import ECHO_HEADER_BYTES

# Error kinds, as counted in results["errors"].
ECHO_CORRUPT = "echo_corrupt"
ECHO_REORDER = "echo_reorder"
ECHO_CROSSTALK = "echo_crosstalk"
UNEXPECTED_DATA = "unexpected_data"
HTTP_STATUS = "http_status"
HTTP_FRAMING = "http_framing"

ECHO_HEADER = struct.Struct("<IQ")
assert ECHO_HEADER.size == ECHO_HEADER_BYTES
# nginx refuses response heads above its buffer size too; a head this long is garbage.
MAX_REPLY_HEAD_BYTES = 16384


class VerifyError(Exception):
    """A reply that is not what was asked for; ``kind`` is the error counter name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def echo_filler(size_bytes: int) -> bytes:
    """The bytes after the header: a fixed, non-repeating-looking pattern."""
    n = size_bytes - ECHO_HEADER_BYTES
    return bytes((i * 131 + 17) & 0xFF for i in range(n))


def echo_message(cid: int, seq: int, filler: bytes) -> bytes:
    return ECHO_HEADER.pack(cid, seq) + filler


def _first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    # Binary search on equal prefixes: the slow path stays cheap for megabyte messages.
    while lo < hi:
        mid = (lo + hi) // 2
        if a[lo : mid + 1] == b[lo : mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def classify_echo(
    expected: bytes | None,
    data: bytes,
    got_bytes: int,
    filler: bytes,
    cid: int,
    next_seq: int,
    connections: int,
) -> str:
    """The kind of mismatch between the outstanding ``expected`` bytes and ``data``.

    ``got_bytes`` is how much of the first outstanding message had already arrived, so
    message boundaries in ``data`` are at ``size - got_bytes`` and every ``size`` after.
    """
    if not expected:
        return UNEXPECTED_DATA
    i = _first_difference(expected, data)
    if i >= len(expected):
        return UNEXPECTED_DATA
    size = ECHO_HEADER_BYTES + len(filler)
    start = i - (got_bytes + i) % size
    if start < 0 or start + size > len(data):
        return ECHO_CORRUPT  # the message with the bad byte is not whole here: no header
    got = data[start : start + size]
    rcid, rseq = ECHO_HEADER.unpack_from(got)
    if rcid != cid and rcid < connections and got == echo_message(rcid, rseq, filler):
        return ECHO_CROSSTALK
    if rcid == cid and rseq < next_seq and got == echo_message(cid, rseq, filler):
        return ECHO_REORDER
    return ECHO_CORRUPT


def parse_http_replies(buf: bytes, outstanding: int, known: bytes) -> tuple[int, int, bytes]:
    """``(replies, bytes_consumed, last_valid_reply)`` for whole replies at the start of buf.

    At most ``outstanding`` replies are taken; bytes beyond them are an error, a partial
    reply at the end is left for the next read. ``known`` is a reply already verified:
    an identical one is accepted without parsing.
    """
    pos = 0
    replies = 0
    end_of_buf = len(buf)
    while replies < outstanding and pos < end_of_buf:
        if known and buf.startswith(known, pos):
            pos += len(known)
            replies += 1
            continue
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            if end_of_buf - pos > MAX_REPLY_HEAD_BYTES:
                raise VerifyError(HTTP_FRAMING)
            break
        body_bytes = _check_head(buf[pos:head_end])
        reply_end = head_end + 4 + body_bytes
        if reply_end > end_of_buf:
            break
        known = buf[pos:reply_end]
        pos = reply_end
        replies += 1
    if replies == outstanding and pos < end_of_buf:
        raise VerifyError(UNEXPECTED_DATA)
    return replies, pos, known


def _check_head(head: bytes) -> int:
    """The Content-Length of a ``200`` reply head; :class:`VerifyError` for anything else."""
    status_line, _, fields = head.partition(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(rest) < 3 or not rest[:3].isdigit():
        raise VerifyError(HTTP_FRAMING)
    if rest[:3] != b"200":
        raise VerifyError(HTTP_STATUS)
    length: int | None = None
    for line in fields.split(b"\r\n") if fields else ():
        name, colon, value = line.partition(b":")
        if not colon:
            raise VerifyError(HTTP_FRAMING)
        name = name.strip().lower()
        if name == b"transfer-encoding":
            raise VerifyError(HTTP_FRAMING)  # only Content-Length framing is accepted
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit() or (length is not None and int(value) != length):
                raise VerifyError(HTTP_FRAMING)
            length = int(value)
    if length is None:
        raise VerifyError(HTTP_FRAMING)
    return length
