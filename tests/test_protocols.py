"""Protocol sessions in isolation: echo identity and the HTTP parser's framing rules."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servers.protocols import (
    HTTP_BAD_REQUEST,
    HTTP_OK,
    HTTP_OK_CLOSE,
    MAX_HEAD_BYTES,
    PROTOCOLS,
    HttpSession,
)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_echo_returns_every_byte() -> None:
    session = PROTOCOLS["echo"]()
    assert session.data_received(b"abc") == b"abc"
    assert not session.wants_close


def test_http_single_request() -> None:
    session = HttpSession()
    assert session.data_received(GET) == HTTP_OK
    assert not session.wants_close


@given(st.lists(st.integers(min_value=1, max_value=len(GET) * 3 - 1), max_size=6))
def test_http_pipelined_requests_split_anywhere(cuts: list[int]) -> None:
    stream = GET * 3
    bounds = [0, *sorted(set(cuts)), len(stream)]
    session = HttpSession()
    replies = b"".join(session.data_received(stream[i:j]) for i, j in itertools.pairwise(bounds))
    assert replies == HTTP_OK * 3


def test_http_body_is_skipped_not_parsed_as_a_request() -> None:
    session = HttpSession()
    request = b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
    assert session.data_received(request[:-4]) == b""  # answered once the body is in
    assert session.data_received(request[-4:] + GET) == HTTP_OK * 2


def test_http_chunked_body_is_skipped_not_parsed_as_a_request() -> None:
    session = HttpSession()
    request = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGET \r\n0\r\n\r\n"
    assert session.data_received(request + GET) == HTTP_OK * 2
    assert not session.wants_close


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"CONNECT example.test:443 HTTP/1.1\r\n\r\n",
    ],
)
def test_http_malformed_head_gets_400_and_close(head: bytes) -> None:
    session = HttpSession()
    assert session.data_received(GET + head + GET) == HTTP_OK + HTTP_BAD_REQUEST
    assert session.wants_close


def test_http_oversized_head_gets_400_before_it_ends() -> None:
    session = HttpSession()
    partial = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * MAX_HEAD_BYTES
    assert session.data_received(partial) == HTTP_BAD_REQUEST
    assert session.wants_close


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"],
)
def test_http_close_requests_end_the_connection(request_bytes: bytes) -> None:
    session = HttpSession()
    assert session.data_received(request_bytes + GET) == HTTP_OK_CLOSE
    assert session.wants_close


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\r\n\tfolded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET /\tx HTTP/1.1\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX A: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A : b\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-H: v\r\n" * 101 + b"\r\n",
    ],
    ids=[
        "conflicting-content-length", "repeated-content-length",
        "content-length-with-transfer-encoding", "5000-digit-content-length",
        "content-length-over-64-bits", "negative-content-length", "obs-fold-space",
        "obs-fold-tab", "bare-cr", "bare-lf", "nul-in-value", "control-in-target",
        "tab-in-target", "del-in-target", "space-in-name", "space-before-colon",
        "101-headers",
    ],
)  # fmt: skip
def test_http_ambiguous_head_gets_400_and_close(head: bytes) -> None:
    session = HttpSession()
    assert session.data_received(GET + head + GET) == HTTP_OK + HTTP_BAD_REQUEST
    assert session.wants_close


def test_http_header_count_limit_is_configurable() -> None:
    head = b"GET / HTTP/1.1\r\n" + b"X-H: v\r\n" * 5 + b"\r\n"
    assert HttpSession(max_headers=5).data_received(head) == HTTP_OK
    assert HttpSession(max_headers=4).data_received(head) == HTTP_BAD_REQUEST


def test_http_huge_content_length_is_a_body_in_progress() -> None:
    session = HttpSession()
    head = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n"
    assert session.data_received(head) == b""
    assert session.attention and not session.wants_close  # a request in progress


def test_http_unfinished_request_is_flagged_and_numbered() -> None:
    """The loop's header timeout relies on these: attention while part of a request is
    held, and partial_seq changing only when a new unfinished request begins."""
    session = HttpSession()
    assert session.data_received(b"GET / HT") == b""
    assert session.attention
    first = session.partial_seq
    assert session.data_received(b"TP/1.1\r\n") == b""
    assert session.partial_seq == first  # the same request, still unfinished
    assert session.data_received(b"\r\n" + GET[:5]) == HTTP_OK
    assert session.attention and session.partial_seq == first + 1  # a new one began
    assert session.data_received(GET[5:]) == HTTP_OK
    assert not session.attention
    assert session.timed_out().startswith(b"HTTP/1.1 408 ")
    assert session.wants_close
