"""Server-side cost of parsing HTTP requests: the hardened hand-written parser
(:mod:`benchmarks.http_handwritten`) against the server's session on httptools (llhttp,
the parser behind Node.js and uvicorn), per request.

Both do the whole job the server needs per ``data_received``: find each request, know its
body length and whether the connection stays open, count its header lines (for
``--max-headers``), and build the replies. httptools reports what it parsed through
Python callbacks, so its cost per request grows with the header count even though llhttp
itself is C. The decision and its figures are in the header of :mod:`servers.protocols`.

Run: ``pytest --benchmark-only benchmarks/test_http_parse.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from benchmarks.http_handwritten import HandWrittenHttpSession
from servers.protocols import HTTP_OK, HttpSession

# What wrk sends, and what a browser sends (8 header lines).
WRK_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER_REQUEST = (
    b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.test\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nCache-Control: no-cache\r\n\r\n"
)
WORKLOADS = {
    "wrk-1": (WRK_REQUEST, 1),
    "wrk-pipelined-16": (WRK_REQUEST * 16, 16),
    "browser-1": (BROWSER_REQUEST, 1),
}
CALLS_PER_ROUND = 1000


PARSERS: dict[str, Callable[[], Any]] = {
    "hand-written": HandWrittenHttpSession,
    "httptools": HttpSession,
}


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("parser", list(PARSERS))
def test_parse_cost_per_request(benchmark: Any, parser: str, workload: str) -> None:
    data, requests = WORKLOADS[workload]
    session = PARSERS[parser]()
    feed = session.data_received

    def round_of_calls() -> bytes:
        reply = b""
        for _ in range(CALLS_PER_ROUND):
            reply = feed(data)
        return reply

    benchmark.group = f"http parse: {workload}"
    benchmark.extra_info.update(
        {"parser": parser, "workload": workload, "requests_per_call": requests,
         "calls_per_round": CALLS_PER_ROUND,
         "unit": "one round = calls_per_round x requests_per_call requests"}
    )  # fmt: skip
    reply = benchmark.pedantic(round_of_calls, rounds=50, warmup_rounds=3)
    assert reply == HTTP_OK * requests
    assert not session.wants_close
