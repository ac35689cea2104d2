"""The hand-written HTTP reply parser against httptools (llhttp), per reply.

Both parse the same nginx reply (its real head, ``Date`` included) from one buffer, as
the load generator's slow path does when a reply differs from the last one verified;
``extra_info`` has nanoseconds per reply. The two run in one session, interleaved by
pytest-benchmark's rounds, so machine drift hits both. Decision and figures are in
``loadgen/protocols/http.py``'s header. Run:

    pytest --benchmark-only benchmarks/test_http_parser.py
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks.hand_http_parser import KEEP_OPEN, parse_replies
from loadgen.protocols.http import ReplyFramer

NGINX_REPLY = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 05:%02d:%02d GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 18\r\nConnection: keep-alive\r\n\r\n"
    b"Hello from muxlab\n"
)
REPLIES = 100  # per call: one buffer of pipelined replies, as pipeline=100 would bring
# Every reply has another Date, so the hand-written parser's "same as the last reply"
# shortcut never applies: both parse every head in full.
BUF = b"".join(NGINX_REPLY % divmod(i, 60) for i in range(REPLIES))


def hand_written(buf: bytes) -> int:
    replies, consumed, _, ending = parse_replies(buf, REPLIES, b"")
    assert (consumed, ending) == (len(buf), KEEP_OPEN)
    return replies


def with_httptools(buf: bytes) -> int:
    """What the load generator runs: a fresh connection's framer, every callback on."""
    framer = ReplyFramer()
    framer.feed(buf)
    assert not framer.bad_status and not framer.close and not framer.partial
    return framer.done


@pytest.mark.parametrize(
    "parser", [hand_written, with_httptools], ids=["hand-written", "httptools"]
)
def test_reply_parser(benchmark: pytest.FixtureRequest, parser: Callable[[bytes], int]) -> None:
    buf = BUF
    benchmark.group = "loadgen: HTTP reply parsing, nginx reply"  # type: ignore[attr-defined]
    replies = benchmark(parser, buf)  # type: ignore[operator]
    assert replies == REPLIES
    mean_s = benchmark.stats.stats.mean  # type: ignore[attr-defined]
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        reply_bytes=len(BUF) // REPLIES, ns_per_reply=round(mean_s / REPLIES * 1e9, 1)
    )
