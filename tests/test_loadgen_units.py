"""The load generator's pure parts: verification, recording and merging, schedules, config."""

from __future__ import annotations

import multiprocessing
import os
import random
import select
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.config import LoadConfig, default_processes, parse_cpu_list, resolve
from loadgen.connection import Conn
from loadgen.messages import Go, WorkerSpec
from loadgen.protocols.echo import EchoClient, classify_echo, echo_filler, echo_message
from loadgen.protocols.http import HttpClient
from loadgen.recording import (
    HIGHEST_NS,
    SLOTS,
    BatchRecorder,
    LatencySummary,
    merge_encoded,
    new_histogram,
    slot_index,
    slot_value,
)
from loadgen.report import format_summary
from loadgen.result import ConnectionCounts, LoadResult
from loadgen.schedule import Pacer, Phases, split_evenly
from loadgen.verify import (
    CLOSED,
    CLOSED_MID_REPLY,
    ECHO_CORRUPT,
    ECHO_CROSSTALK,
    ECHO_REORDER,
    HTTP_FRAMING,
    HTTP_STATUS,
    UNEXPECTED_DATA,
)
from loadgen.worker import Worker
from muxlab.errors import UsageError
from servers.protocols import HTTP_OK

FILLER = echo_filler(64)


def stream(cid: int, seqs: range | list[int]) -> bytes:
    return b"".join(echo_message(cid, s, FILLER) for s in seqs)


# -- echo verification ---------------------------------------------------------------------


def test_echo_messages_differ_per_connection_and_sequence() -> None:
    assert len(echo_message(3, 9, FILLER)) == 64
    assert echo_message(3, 9, FILLER) != echo_message(3, 10, FILLER)
    assert echo_message(3, 9, FILLER) != echo_message(4, 9, FILLER)


@pytest.mark.parametrize(
    ("received", "kind"),
    [
        (stream(2, [5, 4]), ECHO_REORDER),  # this connection's messages, swapped
        (stream(7, [4, 5]), ECHO_CROSSTALK),  # another connection's messages
        (stream(2, [4]) + stream(7, [0]), ECHO_CROSSTALK),
        (stream(2, [4, 5]) + b"x", UNEXPECTED_DATA),  # more than was sent
    ],
)
def test_echo_mismatch_kinds(received: bytes, kind: str) -> None:
    expected = stream(2, [4, 5])
    assert classify_echo(expected, received, 0, FILLER, cid=2, next_seq=6, connections=8) == kind


@given(st.integers(0, 127), st.integers(1, 255))
def test_any_flipped_byte_is_corruption(position: int, flip: int) -> None:
    expected = stream(2, [4, 5])
    received = bytearray(expected)
    received[position] ^= flip
    kind = classify_echo(expected, bytes(received), 0, FILLER, cid=2, next_seq=6, connections=3)
    # A flip in the header can turn a message into another valid one: never silently ok.
    assert kind in (ECHO_CORRUPT, ECHO_REORDER, ECHO_CROSSTALK)
    if position % 64 >= 12:
        assert kind == ECHO_CORRUPT


def test_mismatch_after_a_partial_message_is_found() -> None:
    expected = stream(2, [4, 5])[10:]  # the first 10 bytes of seq 4 already arrived
    received = bytearray(expected)
    received[60] ^= 1  # inside seq 5 (offset 70 of the stream)
    kind = classify_echo(expected, bytes(received), 10, FILLER, cid=2, next_seq=6, connections=3)
    assert kind == ECHO_CORRUPT


def test_data_when_nothing_is_owed_is_unexpected() -> None:
    assert classify_echo(None, b"hi", 0, FILLER, 0, 0, 1) == UNEXPECTED_DATA


# -- HTTP verification ---------------------------------------------------------------------


class HttpHarness:
    """An HttpClient on one socket-pair connection, recording what it asked the worker."""

    def __init__(self, pipeline: int = 4) -> None:
        spec = WorkerSpec(index=0, family=socket.AF_UNIX, sockaddr=(), protocol="http",
                          request=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", first_cid=0,
                          active=1, idle=0, all_active=1, size_bytes=64, pipeline=pipeline,
                          rate_rps=None, connect_rate_cps=1.0, timeout_s=1.0, cpu=None,
                          fds_needed=0, progress=False)  # fmt: skip
        self.failed: list[str] = []
        self.reopened: list[bytes] = []
        self.client = HttpClient(spec, self._fail, self._reopen)
        self.ours, self.theirs = socket.socketpair()
        self.conn = Conn(self.ours, cid=0)

    def _fail(self, c: Conn, kind: str) -> None:
        self.failed.append(kind)

    def _reopen(self, c: Conn, payload: bytes) -> bool:
        self.reopened.append(payload)
        c.attach(self.ours)
        return True

    def owe(self, n: int) -> None:
        self.conn.sent.extend([0] * n)

    def feed(self, *pieces: bytes) -> int:
        total = 0
        for piece in pieces:
            n = self.client.absorb(self.conn, piece)
            if n < 0:
                return n
            for _ in range(n):  # as the worker does: the answered requests leave
                self.conn.sent.popleft()
            total += n
        return total

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def http() -> Iterator[HttpHarness]:
    harness = HttpHarness()
    yield harness
    harness.close()


def test_http_whole_and_partial_replies(http: HttpHarness) -> None:
    http.owe(3)
    assert http.feed(HTTP_OK * 2 + HTTP_OK[:20]) == 2
    assert http.conn.partial
    assert http.feed(HTTP_OK[20:]) == 1
    assert not http.conn.partial and http.failed == []


def test_identical_replies_become_the_fast_paths_known_reply(http: HttpHarness) -> None:
    other = HTTP_OK.replace(b"\r\n\r\n", b"\r\nDate: now\r\n\r\n", 1)
    http.owe(2)
    assert http.feed(other * 2) == 2
    assert http.client.known == other
    assert http.client.known_mult[2] == other * 2


def test_chunked_reply_in_pieces(http: HttpHarness) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n")  # fmt: skip
    http.owe(2)
    pieces = [chunked[i : i + 7] for i in range(0, len(chunked), 7)]
    assert http.feed(*pieces, chunked) == 2
    assert http.failed == []


def test_connection_close_reply_reopens_with_the_unanswered_requests(http: HttpHarness) -> None:
    closing = HTTP_OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    http.owe(3)
    assert http.feed(HTTP_OK + closing) == 2
    assert http.reopened == [http.client.request]  # the third request, sent again
    assert http.failed == []


def test_eof_between_replies_reopens_and_in_a_reply_fails(http: HttpHarness) -> None:
    http.owe(2)
    assert http.feed(HTTP_OK, b"") == -1
    assert http.reopened == [http.client.request]
    assert http.feed(HTTP_OK[:30], b"") == -1
    assert http.failed == [CLOSED_MID_REPLY]


def test_eof_before_any_reply_is_an_error(http: HttpHarness) -> None:
    http.owe(1)
    assert http.feed(b"") == -1
    assert http.failed == [CLOSED]
    assert http.reopened == []


def test_http10_body_delimited_by_the_close(http: HttpHarness) -> None:
    http.owe(1)
    assert http.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body", b" more") == 0
    assert http.feed(b"") == 1
    assert http.reopened == [b""]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (HTTP_OK.replace(b"200 OK", b"503 Busy"), HTTP_STATUS),
        (HTTP_OK.replace(b"200 OK", b"404 Not Found"), HTTP_STATUS),
        (
            HTTP_OK.replace(b"Content-Length: 18", b"Content-Length: 18\r\nContent-Length: 5"),
            HTTP_FRAMING,
        ),
        (HTTP_OK.replace(b"Content-Length: 18", b"Content-Length: 1" + b"0" * 5000), HTTP_FRAMING),
        (HTTP_OK.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1), HTTP_FRAMING),
        (HTTP_OK.replace(b"Content-Length: 18", b"Content-Length: 18\r\n folded"), HTTP_FRAMING),
        (b"garbage\r\n\r\n", HTTP_FRAMING),
        (HTTP_OK + b"extra", UNEXPECTED_DATA),
        (HTTP_OK * 2, UNEXPECTED_DATA),
    ],
)
def test_http_bad_replies(http: HttpHarness, reply: bytes, kind: str) -> None:
    http.owe(1)
    assert http.feed(reply) == -1
    assert http.failed == [kind]


# -- recording -----------------------------------------------------------------------------


def test_merging_two_workers_equals_one_histogram_of_all_values() -> None:
    rng = random.Random(1)
    values = [int(rng.lognormvariate(11, 1.5)) for _ in range(20000)] + [0, 1, HIGHEST_NS]
    first, second, whole = BatchRecorder(), BatchRecorder(), new_histogram()
    for i, value in enumerate(values):
        (first if i % 3 else second).pending.append(value)
        whole.record_value(value)
    merged = merge_encoded([first.encode(), second.encode()])
    assert merged.get_total_count() == len(values)
    assert list(merged.counts) == list(whole.counts)
    assert LatencySummary.of(merged) == LatencySummary.of(whole)


def test_batch_recording_equals_one_call_per_value() -> None:
    recorder, direct = BatchRecorder(), new_histogram()
    for value in [5, 5, 5, 700, 2047, 2048, 2049, 4097, 123456, 36_400, 36_900, 5]:
        recorder.pending.append(value)
        direct.record_value(value)
    recorder.flush()
    assert recorder.pending == []
    assert list(recorder.histogram().counts) == list(direct.counts)


def test_percentiles_of_a_known_distribution_within_a_tenth_of_a_percent() -> None:
    # Loopback-like latencies, lognormal around 40 us, in nanoseconds; the exact
    # percentiles are read from the sorted sample (nearest rank, as HdrHistogram counts).
    rng = random.Random(3)
    values = [int(rng.lognormvariate(10.6, 0.4)) for _ in range(200_000)]
    recorder = BatchRecorder()
    for start in range(0, len(values), 20_000):  # in 100 ms batches, as the worker does
        recorder.pending.extend(values[start : start + 20_000])
        recorder.flush()
    summary = LatencySummary.of(recorder.histogram())
    ordered = sorted(values)
    for got_us, per_mille in ((summary.p50, 500), (summary.p90, 900), (summary.p99, 990),
                              (summary.p99_9, 999)):  # fmt: skip
        exact_ns = ordered[-(-len(ordered) * per_mille // 1000) - 1]
        assert abs(got_us * 1000 - exact_ns) / exact_ns <= 0.001, (per_mille, got_us, exact_ns)
    assert summary.count == len(values)


def test_sub_microsecond_differences_are_kept() -> None:
    recorder = BatchRecorder()
    recorder.pending.extend([36_400] * 3 + [36_900] * 2)
    recorder.flush()
    summary = LatencySummary.of(recorder.histogram())
    assert abs(summary.p50 - 36.4) <= 0.0364
    assert abs(summary.max - 36.9) <= 0.0369


def test_values_beyond_the_range_are_clamped_not_lost() -> None:
    recorder = BatchRecorder()
    recorder.pending.append(HIGHEST_NS * 10)
    recorder.flush()
    assert recorder.histogram().get_total_count() == 1


# -- schedules -----------------------------------------------------------------------------


def test_pacer_slots_do_not_drift() -> None:
    pacer = Pacer(start_ns=1000, rate_per_s=3.0)
    dues = [pacer.advance() for _ in range(7)]
    assert dues == [1000 + int(n * 1e9 / 3) for n in range(7)]
    assert pacer.next_due_ns == 1000 + int(7 * 1e9 / 3)


def test_phases_and_split() -> None:
    phases = Phases.starting_at(100, 1.0, 2.5)
    assert phases.measure_start_ns == 100 + 10**9
    assert phases.end_ns == 100 + 35 * 10**8
    assert split_evenly(10, 3) == [4, 3, 3]
    assert sum(split_evenly(7, 7)) == 7


# -- config --------------------------------------------------------------------------------


def test_cpu_lists() -> None:
    assert parse_cpu_list("1") == (1,)
    assert parse_cpu_list("3,0-1") == (0, 1, 3)
    for bad in ("x", "2-1", "-1", ""):
        with pytest.raises(UsageError):
            parse_cpu_list(bad)


def test_default_processes_leave_the_server_cpus_out() -> None:
    mine = os.sched_getaffinity(0)
    assert default_processes((), ()) == len(mine)
    assert default_processes((), (min(mine),)) == max(1, len(mine) - 1)
    assert default_processes((), tuple(mine)) == 1
    assert default_processes((3, 5), (3,)) == 2  # one per --cpus entry


def test_resolve_fills_processes_and_caps_them_at_the_connections() -> None:
    assert resolve(LoadConfig(port=1, cpus=(0,))).processes == 1
    assert resolve(LoadConfig(port=1, connections=1, processes=8)).processes == 1
    assert resolve(LoadConfig(port=1, connections=1, idle=5, processes=4)).processes == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 0},
        {"connections": 0},
        {"idle": -1},
        {"duration_s": 0},
        {"warmup_s": -1},
        {"size_bytes": 11},
        {"pipeline": 0},
        {"rate_rps": 0},
        {"connect_rate_cps": 0},
        {"timeout_s": 0},
        {"processes": 0},
    ],
)
def test_bad_configs_are_usage_errors(overrides: dict[str, object]) -> None:
    options: dict[str, object] = {"port": 1, **overrides}
    with pytest.raises(UsageError):
        resolve(LoadConfig(**options))  # type: ignore[arg-type]


# -- summary -------------------------------------------------------------------------------


def summary_result(
    client_cpu: tuple[float, ...], rate_rps: float | None = None, parent_cpu: float = 0.0
) -> LoadResult:
    return LoadResult(
        config=LoadConfig(port=1, processes=len(client_cpu), rate_rps=rate_rps),
        environment={},
        requests_ok=1000,
        requests_total=1200,
        errors={"timeout": 2},
        duration_s=2.0,
        bytes_sent=64000,
        bytes_received=64000,
        per_second=(500, 500),
        client_cpu=client_cpu,
        connections=ConnectionCounts(active=10, idle=5, idle_open_at_end=5, connect_errors=0),
        latency=LatencySummary(10, 20, 30, 40, 50, 12.5, 1000),
        latency_uncorrected=LatencySummary(5, 6, 7, 8, 9, 5.5, 1000) if rate_rps else None,
        histogram="",
        histogram_uncorrected=None,
        parent_cpu=parent_cpu,
    )


def summary_with_cpu(client_cpu: tuple[float, ...], rate_rps: float | None) -> str:
    return format_summary(summary_result(client_cpu, rate_rps))


def test_summary_reports_what_was_measured() -> None:
    text = summary_with_cpu((0.5, 0.4), rate_rps=None)
    assert "1,000 ok, 500 req/s" in text
    assert "timeout 2" in text
    assert "p99 30.0 us" in text
    assert "(uncorrected)" not in text
    assert "warning" not in text
    assert "(uncorrected)" in summary_with_cpu((0.5,), rate_rps=500.0)


def test_summary_warns_when_a_worker_is_saturated() -> None:
    text = summary_with_cpu((0.5, 0.97), rate_rps=None)
    assert "warning      client-bound: worker 1 at >= 90% CPU" in text


# -- the worker's slow path for echo replies -----------------------------------------------


@pytest.fixture
def echo_worker() -> Iterator[tuple[Worker, Conn]]:
    """A worker with one connection (one end of a socket pair), for its reply bookkeeping."""
    spec = WorkerSpec(index=0, family=socket.AF_UNIX, sockaddr=(), protocol="echo",
                      request=b"", first_cid=0, active=1, idle=0, all_active=1,
                      size_bytes=100, pipeline=4, rate_rps=None, connect_rate_cps=1.0,
                      timeout_s=1.0, cpu=None, fds_needed=0, progress=False)  # fmt: skip
    ours, theirs = socket.socketpair()
    worker = Worker(spec, ctl=None)  # type: ignore[arg-type]
    conn = Conn(ours, cid=0)
    worker.conns[conn.fd] = conn
    worker.ep.register(conn.fd, select.EPOLLIN)
    yield worker, conn
    worker.ep.close()
    ours.close()
    theirs.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # reset per example
@given(batches=st.lists(st.integers(1, 4), min_size=1, max_size=6), seed=st.integers(0, 999))
def test_replies_in_any_pieces_settle_every_message(
    echo_worker: tuple[Worker, Conn], batches: list[int], seed: int
) -> None:
    worker, conn = echo_worker
    client = worker.client
    assert isinstance(client, EchoClient)
    conn.owed.clear()
    conn.owed_pos = conn.got = conn.seq = 0
    conn.expect = None
    filler = echo_filler(100)
    rng = random.Random(seed)
    unanswered = b""
    settled = 0

    def answer(nbytes: int) -> None:
        nonlocal unanswered, settled
        while nbytes:
            cut = rng.randint(1, nbytes)
            settled += client.absorb(conn, unanswered[:cut])
            unanswered = unanswered[cut:]
            nbytes -= cut

    for count in batches:  # sent in batches, as a refill sends n messages at once
        payload = b"".join(echo_message(0, conn.seq + i, filler) for i in range(count))
        conn.seq += count
        client.owe(conn, payload)
        unanswered += payload
        answer(rng.randint(0, len(unanswered)))  # replies may stop mid-message
    answer(len(unanswered))
    assert settled == sum(batches)
    assert not conn.owed and conn.got == 0
    assert worker.errors == {}


@given(st.integers(0, HIGHEST_NS))
def test_each_value_lands_in_the_slot_hdrhistogram_puts_it_in(value_ns: int) -> None:
    (index,) = slot_index([value_ns]).tolist()
    assert slot_value(index) == new_histogram().get_lowest_equivalent_value(value_ns)
    assert 0 <= index < SLOTS


def test_client_bound_is_any_process_not_the_average() -> None:
    calm = summary_result((0.5, 0.5), parent_cpu=0.1)
    assert not calm.client_bound
    assert "worker 0 50% busy (50% headroom)" in format_summary(calm)
    one_busy = summary_result((0.2, 0.95), parent_cpu=0.1)  # average 0.575
    assert one_busy.client_bound
    assert one_busy.to_json()["client_bound"] is True
    busy_parent = summary_result((0.2,), parent_cpu=0.92)
    assert busy_parent.client_bound
    assert "client-bound: the parent" in format_summary(busy_parent)


def test_server_cpus_shared_with_the_client_are_refused_unless_forced() -> None:
    cpu = min(os.sched_getaffinity(0))
    with pytest.raises(UsageError, match="--force"):
        resolve(LoadConfig(port=1, cpus=(cpu,), server_cpus=(cpu,)))
    forced = resolve(LoadConfig(port=1, cpus=(cpu,), server_cpus=(cpu,), allow_shared_cpus=True))
    assert forced.cpus == (cpu,)


def test_a_go_after_the_window_opened_is_a_late_start_not_a_short_window() -> None:
    spec = WorkerSpec(index=0, family=socket.AF_INET, sockaddr=(), protocol="echo",
                      request=b"", first_cid=0, active=1, idle=0, all_active=1,
                      size_bytes=64, pipeline=1, rate_rps=None, connect_rate_cps=1.0,
                      timeout_s=1.0, cpu=None, fds_needed=0, progress=False)  # fmt: skip
    parent, child = multiprocessing.Pipe()
    worker = Worker(spec, child)
    try:
        parent.send(Go(Phases.starting_at(time.monotonic_ns() - 10**9, 0.5, 10.0)))
        worker._await_go()
        assert worker.errors == {"late_start": 1}
        assert worker.stop_requested
    finally:
        worker.ep.close()
        parent.close()
        child.close()
