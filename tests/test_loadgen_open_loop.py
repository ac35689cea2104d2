"""Open loop loses nothing: every slot due in the window is answered, late or refused.

Stub HTTP servers that stall (hold every reply for a while, across the window's end),
throttle (answer at most K per second) and reset (abort each connection after a few
replies); each run must account for every due slot: due == answered + late + refused.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadgen import LoadConfig, LoadResult, run_load
from loadgen.recording import merge_encoded
from loadgen.result import EXIT_ERRORS, EXIT_OVERLOADED
from servers.protocols import HTTP_OK
from tests.http_servers import Replier, StubFactory, stub_servers

RATE_RPS = 1000.0
WARMUP_S = 0.2
DURATION_S = 1.0


@pytest.fixture
def stub_server() -> Iterator[StubFactory]:
    with stub_servers() as start:
        yield start


def open_run(port: int, **overrides: object) -> LoadResult:
    options: dict[str, object] = {
        "port": port, "protocol": "http", "connections": 4, "processes": 1,
        "rate_rps": RATE_RPS, "warmup_s": WARMUP_S, "duration_s": DURATION_S,
        "timeout_s": 5.0, **overrides,
    }  # fmt: skip
    return run_load(LoadConfig(**options))  # type: ignore[arg-type]


def assert_every_slot_accounted(result: LoadResult) -> None:
    slots = result.open_loop
    assert slots is not None
    assert slots.due == slots.answered + slots.late + slots.refused
    assert abs(slots.due - RATE_RPS * result.duration_s) <= 1
    assert slots.answered == result.requests_ok
    # Answered and late slots each have one (corrected) latency; refused ones none.
    assert merge_encoded([result.histogram]).get_total_count() == slots.answered + slots.late
    assert merge_encoded([result.histogram_uncorrected or ""]).get_total_count() == slots.answered


class Stall(Replier):
    """Answers at once, except from STALL_FROM_S to STALL_UNTIL_S after the first request
    of the run (on any connection): then each reply waits until the stall ends. The
    stall starts inside the window and ends after it."""

    STALL_FROM_S = WARMUP_S + 0.5
    STALL_UNTIL_S = WARMUP_S + DURATION_S + 0.8
    started: float | None = None
    lock = threading.Lock()

    def reply(self, n: int) -> bytes:
        with Stall.lock:
            if Stall.started is None:
                Stall.started = time.monotonic()
            started = Stall.started
        elapsed = time.monotonic() - started
        if self.STALL_FROM_S <= elapsed < self.STALL_UNTIL_S:
            time.sleep(self.STALL_UNTIL_S - elapsed)
        return HTTP_OK


def test_a_stall_across_the_window_end_shows_as_late_censored_slots(
    stub_server: StubFactory,
) -> None:
    Stall.started = None
    result = open_run(stub_server(Stall))
    assert_every_slot_accounted(result)
    slots = result.open_loop
    assert slots is not None
    assert result.errors == {}
    # About the last 0.5 s of the window's slots were still unanswered at its end.
    assert slots.late >= 0.3 * RATE_RPS
    assert slots.refused == 0
    # The earliest late slot was due near the stall's start, 0.5 s before the window's end:
    # censored there, its latency is about 0.5 s (a lower bound of the real one).
    assert result.latency.max >= 300_000
    assert result.overloaded
    assert result.exit_status == EXIT_OVERLOADED


class Throttle(Replier):
    """At most MAX_RPS replies per second over all connections (one token per 1/K s)."""

    MAX_RPS = 300.0
    lock = threading.Lock()
    next_free = 0.0

    def reply(self, n: int) -> bytes:
        with Throttle.lock:
            now = time.monotonic()
            slot = max(now, Throttle.next_free)
            Throttle.next_free = slot + 1.0 / self.MAX_RPS
        time.sleep(max(0.0, slot - now))
        return HTTP_OK


def test_a_throttled_server_is_overloaded_not_erroneous(stub_server: StubFactory) -> None:
    Throttle.next_free = 0.0
    result = open_run(stub_server(Throttle))
    assert_every_slot_accounted(result)
    slots = result.open_loop
    assert slots is not None
    assert result.errors == {}
    assert slots.answered < 0.99 * slots.due  # at most ~300 of ~1000 per second
    assert slots.late > 0
    assert slots.sent < slots.due  # the unsent backlog is late too
    assert result.overloaded
    assert result.exit_status == EXIT_OVERLOADED
    assert result.to_json()["overloaded"] is True


class ResetAfterTen(Replier):
    """Ten replies, then a reset (SO_LINGER 0, socket(7))."""

    def reply(self, n: int) -> bytes:
        return HTTP_OK

    def closes_after(self, n: int) -> bool:
        return n == 10

    def linger_close(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.request.close()


def test_slots_of_reset_connections_are_refused(stub_server: StubFactory) -> None:
    result = open_run(stub_server(ResetAfterTen))
    assert_every_slot_accounted(result)
    slots = result.open_loop
    assert slots is not None
    # Every connection resets after 10 replies (4 x 10 at 1000/s, within the warm-up when
    # the client keeps its schedule): no slot of the window is answered. A slot sent to a
    # connection before its reset was read (a client running behind on a busy machine) is
    # late, not refused; every other one found no connection.
    assert result.errors == {"reset": 4}
    assert slots.answered == 0
    assert slots.refused + slots.late == slots.due
    assert slots.refused > 0
    assert result.exit_status == EXIT_ERRORS  # errors win over overloaded


def test_overloaded_exit_status_through_the_cli(stub_server: StubFactory, tmp_path: Path) -> None:
    Throttle.next_free = 0.0
    port = stub_server(Throttle)
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "load", "--port", str(port), "--protocol", "http",
         "--connections", "4", "--processes", "1", "--rate", str(RATE_RPS), "--duration",
         str(DURATION_S), "--warmup", str(WARMUP_S), "--json", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == EXIT_OVERLOADED, proc.stderr
    assert "OVERLOADED" in proc.stdout
    assert '"overloaded": true' in out.read_text()
