"""The hand-written HTTP reply parser that ``loadgen.protocols.http`` used before httptools.

Kept only as the reference in ``benchmarks/test_http_parser.py``, which measured it
against httptools to choose between them (the figures are in that module's header).
It re-parses from the start of a buffer each call and returns the last reply's bytes.
"""

from __future__ import annotations

from loadgen.verify import HTTP_FRAMING, HTTP_STATUS, UNEXPECTED_DATA, VerifyError

MAX_REPLY_HEAD_BYTES = 16384
MAX_CHUNK_LINE_BYTES = 4096
MAX_LENGTH_DIGITS = 15
HEX_DIGITS = b"0123456789abcdefABCDEF"
KEEP_OPEN = 0
CLOSE_AFTER = 1
UNTIL_CLOSE = 2


class _Head:
    """What a reply head says about its framing."""

    __slots__ = ("chunked", "close", "interim", "length")

    def __init__(self) -> None:
        self.length: int | None = None
        self.chunked = False
        self.close = False
        self.interim = False


def parse_head(head: bytes, head_only: bool) -> _Head:
    """Status and framing of one reply head (without its final CRLF CRLF)."""
    status_line, _, fields = head.partition(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    status = rest[:3]
    if (version not in (b"HTTP/1.1", b"HTTP/1.0") or not status.isdigit()
            or rest[3:4] not in (b"", b" ")):  # fmt: skip
        raise VerifyError(HTTP_FRAMING)
    parsed = _Head()
    keep_alive = version == b"HTTP/1.1"
    transfer_coding = False
    for line in fields.split(b"\r\n") if fields else ():
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\r" in line or b"\n" in line:
            raise VerifyError(HTTP_FRAMING)  # also obs-fold: a line starting with space
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            parsed.length = _content_length(value, parsed.length)
        elif name == b"transfer-encoding":
            transfer_coding = True
            parsed.chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
        elif name == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            if b"close" in tokens:
                parsed.close = True
            elif b"keep-alive" in tokens:
                keep_alive = True
    if transfer_coding and parsed.length is not None:
        raise VerifyError(HTTP_FRAMING)  # RFC 9112 6.3: a smuggling shape; treat as error
    if transfer_coding and not parsed.chunked:
        parsed.length = None  # RFC 9112 6.3 item 4: read until the close
    parsed.close = parsed.close or not keep_alive
    code = int(status)
    if 100 <= code < 200 and code != 101:
        parsed.interim = True
    elif not 200 <= code < 300:
        raise VerifyError(HTTP_STATUS)
    if head_only or code in (204, 304):
        parsed.length, parsed.chunked = 0, False
    return parsed


def _content_length(value: bytes, previous: int | None) -> int:
    # RFC 9112 6.3 item 5: a list of identical values is that value; anything else is
    # an unrecoverable framing error.
    values = {v.strip() for v in value.split(b",")}
    if len(values) != 1:
        raise VerifyError(HTTP_FRAMING)
    text = values.pop()
    if not text.isdigit() or len(text) > MAX_LENGTH_DIGITS:
        raise VerifyError(HTTP_FRAMING)
    length = int(text)
    if previous is not None and previous != length:
        raise VerifyError(HTTP_FRAMING)
    return length


def chunked_end(buf: bytes, pos: int) -> int:
    """Where a chunked body starting at ``pos`` ends (after its trailers); -1 if not yet."""
    end = len(buf)
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if end - pos > MAX_CHUNK_LINE_BYTES:
                raise VerifyError(HTTP_FRAMING)
            return -1
        size_text = buf[pos:line_end].split(b";", 1)[0].strip(b" \t")
        if not size_text or size_text.strip(HEX_DIGITS) or len(size_text) > MAX_LENGTH_DIGITS:
            raise VerifyError(HTTP_FRAMING)
        size = int(size_text, 16)
        pos = line_end + 2
        if size == 0:
            return _trailers_end(buf, pos)
        if pos + size + 2 > end:
            return -1
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise VerifyError(HTTP_FRAMING)
        pos += size + 2


def _trailers_end(buf: bytes, pos: int) -> int:
    start = pos
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if len(buf) - start > MAX_REPLY_HEAD_BYTES:
                raise VerifyError(HTTP_FRAMING)
            return -1
        if line_end == pos:
            return pos + 2
        pos = line_end + 2


def parse_replies(
    buf: bytes, outstanding: int, known: bytes, head_only: bool = False
) -> tuple[int, int, bytes, int]:
    """``(replies, consumed, last_reply, ending)`` for whole replies at the start of buf.

    At most ``outstanding`` replies are taken; bytes beyond them are an error, a partial
    reply at the end is left for the next read. ``known`` is a reply already verified:
    an identical one is accepted without parsing, and the last whole reply that keeps the
    connection open is returned in its place. ``ending`` is :data:`KEEP_OPEN`,
    :data:`CLOSE_AFTER` (the last reply taken closes the connection) or
    :data:`UNTIL_CLOSE` (the reply at ``consumed`` ends when the server closes).
    """
    pos = 0
    replies = 0
    end = len(buf)
    while replies < outstanding and pos < end:
        if known and buf.startswith(known, pos):
            pos += len(known)
            replies += 1
            continue
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            if end - pos > MAX_REPLY_HEAD_BYTES:
                raise VerifyError(HTTP_FRAMING)
            break
        head = parse_head(buf[pos:head_end], head_only)
        body_start = head_end + 4
        if head.interim:
            pos = body_start
            continue
        if head.chunked:
            reply_end = chunked_end(buf, body_start)
            if reply_end < 0:
                break
        elif head.length is None:
            return replies, pos, known, UNTIL_CLOSE
        else:
            reply_end = body_start + head.length
            if reply_end > end:
                break
        reply = buf[pos:reply_end]
        pos = reply_end
        replies += 1
        if head.close:
            if pos < end:
                raise VerifyError(UNEXPECTED_DATA)
            return replies, pos, known, CLOSE_AFTER
        known = reply
    if replies == outstanding and pos < end:
        raise VerifyError(UNEXPECTED_DATA)
    return replies, pos, known, KEEP_OPEN
