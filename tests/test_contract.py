"""The server process interface: one owner (servers/contract.py) writes and parses both
lines, and every server child speaks them."""

from __future__ import annotations

import pytest

from servers.contract import (
    ReadyLine,
    format_counters_line,
    parse_counters_line,
    parse_ready_line,
)
from servers.counters import Counters
from tests.conftest import ServerFactory


@pytest.mark.parametrize(
    "ready",
    [
        ReadyLine("127.0.0.1", 8080, "epoll-et", "echo"),
        ReadyLine("::1", 1, "uvloop-protocol", "http"),
        ReadyLine("127.0.0.2", 65535, "io_uring", "http"),
    ],
)
def test_ready_line_round_trips_every_field(ready: ReadyLine) -> None:
    line = ready.format()
    assert line.startswith("muxlab: listening on ")
    assert parse_ready_line(line) == ready
    assert parse_ready_line(line + "\n") == ready


@pytest.mark.parametrize(
    "line",
    [
        "",
        "muxlab: counters {}",
        "muxlab: listening on 127.0.0.1:80 backend=poll",
        "muxlab: listening on 127.0.0.1:http backend=poll protocol=echo",
        "muxlab: listening on 127.0.0.1:80 backend=poll protocol=echo extra",
        "note: muxlab: listening on 127.0.0.1:80 backend=poll protocol=echo",
    ],
)
def test_other_lines_are_not_ready_lines(line: str) -> None:
    assert parse_ready_line(line) is None


def test_counters_line_round_trips_a_snapshot() -> None:
    counters = Counters(reads=7, bytes_in=1024)
    counters.errors["ECONNRESET"] += 2
    snapshot = counters.snapshot()
    line = format_counters_line(snapshot)
    assert line.startswith("muxlab: counters {")
    assert "\n" not in line
    parsed = parse_counters_line(line)
    assert parsed == snapshot
    assert parsed is not None and parsed["errors"] == {"ECONNRESET": 2}
    assert parse_counters_line("muxlab: listening on 127.0.0.1:1 backend=a protocol=b") is None


@pytest.mark.parametrize("backend", ["poll", "epoll-et"])
def test_a_served_ready_line_parses_to_the_address_the_server_holds(
    start_server: ServerFactory, backend: str
) -> None:
    server = start_server(backend, "http")
    assert server.host == "127.0.0.1"
    assert server.port > 0
    snapshot = server.counters()
    assert snapshot["connections_open"] == 0
    assert snapshot["cpu_user_s"] >= 0.0
