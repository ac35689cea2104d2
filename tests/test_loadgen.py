"""``muxlab load`` against real ``muxlab serve`` children: every backend, both protocols,
closed and open loop, with idle connections. Assertions are on counts and bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen import LoadConfig, LoadResult, run_load
from loadgen.protocols.http import HttpClient
from loadgen.recording import merge_encoded
from loadgen.result import CLIENT_BOUND_UTIL
from servers.protocols import HTTP_OK
from tests.conftest import ServerFactory

ACTIVE = 4
IDLE = 16
RATE_RPS = 2000.0


def short_run(port: int, protocol: str, **overrides: object) -> LoadResult:
    options: dict[str, object] = {
        "port": port,
        "protocol": protocol,
        "connections": ACTIVE,
        "idle": IDLE,
        "processes": 1,
        "duration_s": 0.6,
        "warmup_s": 0.2,
        "timeout_s": 5.0,
    }
    options.update(overrides)
    return run_load(LoadConfig(**options))  # type: ignore[arg-type]


def reply_bytes(result: LoadResult) -> int:
    return result.config.size_bytes if result.config.protocol == "echo" else len(HTTP_OK)


def request_bytes(result: LoadResult) -> int:
    config = result.config
    if config.protocol == "echo":
        return config.size_bytes
    return len(HttpClient.fixed_request(config, f"{config.host}:{config.port}"))


def assert_clean_run(result: LoadResult) -> None:
    assert result.errors == {}
    # A short open-loop window on a busy machine may end with a few percent of its slots
    # in flight (late): overloaded by the definition, but not an error.
    assert result.exit_status == (3 if result.overloaded else 0)
    if result.open_loop is not None:
        assert result.open_loop.answered >= 0.9 * result.open_loop.due
    assert result.requests_ok > 0
    assert result.requests_total >= result.requests_ok
    assert result.connections.active == ACTIVE
    assert result.connections.idle == IDLE
    assert result.connections.idle_open_at_end == IDLE
    assert result.connections.connect_errors == 0
    # Every reply counted in the window has exactly one latency in the histogram; in open
    # loop so has every slot of the window still unanswered at its end (censored there).
    late = result.open_loop.late if result.open_loop is not None else 0
    assert merge_encoded([result.histogram]).get_total_count() == result.requests_ok + late
    assert result.latency.count == result.requests_ok + late
    assert 0 < result.latency.p50 <= result.latency.p99 <= result.latency.max
    # Bytes received in the window against the replies it counted. At most `pipeline`
    # requests per connection are in flight at any instant, so at most that many replies
    # straddle each edge.
    reply = reply_bytes(result)
    in_flight = ACTIVE * result.config.pipeline
    if result.open_loop is None:
        # Closed loop counts replies completed in the window: they differ from the bytes
        # by the replies cut at its edges.
        assert abs(result.bytes_received - result.requests_ok * reply) <= in_flight * reply
    else:
        # Open loop counts the replies to the window's slots: each was sent at or after
        # its slot came due, so all of its bytes arrived in the window. The window also
        # received replies to requests sent before it (in flight at its start) and to
        # the backlog of a client that fell behind before it (sent in the window).
        assert result.bytes_received >= result.requests_ok * reply
        sent = result.bytes_sent // request_bytes(result)
        assert result.bytes_received <= (in_flight + sent) * reply
    assert sum(result.per_second) <= result.requests_ok
    assert len(result.client_cpu) == 1
    # One thread's CPU time over the wall time between the same two readings.
    assert 0.0 < result.client_cpu[0] <= 1.0


@pytest.mark.parametrize("protocol", ["echo", "http"])
@pytest.mark.parametrize("loop", ["closed", "open"])
def test_every_backend_protocol_and_loop(
    backend: str, protocol: str, loop: str, start_server: ServerFactory
) -> None:
    server = start_server(backend, protocol)
    rate = RATE_RPS if loop == "open" else None
    result = short_run(server.port, protocol, rate_rps=rate, pipeline=2)
    assert_clean_run(result)
    if loop == "open":
        assert result.latency_uncorrected is not None
        assert result.latency_uncorrected.count == result.requests_ok
        slots = result.open_loop
        assert slots is not None
        assert slots.due == slots.answered + slots.late + slots.refused
        assert slots.answered == result.requests_ok
        assert slots.refused == 0
        # The window's slots, to the one: rate x window, whatever the server did.
        assert abs(slots.due - RATE_RPS * result.duration_s) <= 1
        # Slots are paced: no more requests than slots were due, whatever the server's speed.
        due_slots = RATE_RPS * (0.2 + 0.6) + ACTIVE
        assert result.requests_total <= due_slots
    else:
        assert result.latency_uncorrected is None
        assert result.histogram_uncorrected is None
        assert result.open_loop is None


def test_server_sees_exactly_the_connections_and_bytes(start_server: ServerFactory) -> None:
    server = start_server("epoll-lt", "echo")
    result = short_run(server.port, "echo", size_bytes=1000, pipeline=3)
    assert_clean_run(result)
    counters = server.stop()
    assert counters is not None
    # One probe connection before the run, then the active and idle ones.
    assert counters["connections_accepted"] == 1 + ACTIVE + IDLE
    assert counters["bytes_in"] == counters["bytes_out"]
    assert counters["bytes_out"] % 1000 == 0


def test_large_messages_survive_partial_reads_and_writes(start_server: ServerFactory) -> None:
    server = start_server("epoll-et", "echo")
    size, pipeline, connections = 1 << 20, 2, 2
    result = short_run(server.port, "echo", size_bytes=size, pipeline=pipeline,
                       connections=connections, idle=0)  # fmt: skip
    assert result.errors == {}
    assert result.requests_ok > 0
    # Every byte is counted, also those of replies that arrive in many pieces.
    edge_bytes = connections * pipeline * size
    assert abs(result.bytes_received - result.requests_ok * size) <= edge_bytes
    assert abs(result.bytes_sent - result.requests_ok * size) <= edge_bytes


def test_several_processes_merge_into_one_result(start_server: ServerFactory) -> None:
    server = start_server("epoll-lt", "http")
    result = short_run(server.port, "http", processes=2)
    assert result.errors == {}
    assert len(result.client_cpu) == 2
    assert result.connections.idle_open_at_end == IDLE
    assert merge_encoded([result.histogram]).get_total_count() == result.requests_ok


def test_json_has_the_contract_keys(start_server: ServerFactory, tmp_path: Path) -> None:
    server = start_server("epoll-lt", "echo")
    result = short_run(server.port, "echo", rate_rps=RATE_RPS)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result.to_json()))
    data = json.loads(path.read_text())
    for key in (
        "schema_version", "config", "environment", "requests_ok", "requests_total",
        "errors", "rps", "duration_s", "bytes_sent", "bytes_received", "mib_per_s",
        "latency_us", "latency_us_uncorrected", "per_second", "client_cpu", "connections",
        "histogram", "histogram_uncorrected",
    ):  # fmt: skip
        assert key in data, key
    assert data["schema_version"] == 2
    assert set(data["latency_us"]) == {"p50", "p90", "p99", "p99_9", "max", "mean"}
    assert set(data["connections"]) == {"active", "idle", "idle_open_at_end", "connect_errors"}
    assert data["config"]["rate_rps"] == RATE_RPS
    assert data["environment"]["fd_limit_hard"] > 0
    # The encoded histograms load again and merge with others (multi-run merges).
    twice = merge_encoded([data["histogram"], data["histogram"]])
    assert twice.get_total_count() == 2 * (data["requests_ok"] + data["open_loop"]["late"])
    slots = data["open_loop"]
    assert set(slots) == {"offered_rps", "sent_rps", "achieved_rps", "due", "sent", "answered",
                          "late", "refused"}  # fmt: skip
    assert slots["due"] == slots["answered"] + slots["late"] + slots["refused"]
    assert slots["offered_rps"] == RATE_RPS
    assert data["overloaded"] is False
    assert data["reconnects"] == 0
    assert 0.0 <= data["parent_cpu"] <= 1.0
    busiest = max(*data["client_cpu"], data["parent_cpu"])
    assert data["client_bound"] == (busiest >= CLIENT_BOUND_UTIL)
    assert merge_encoded([data["histogram_uncorrected"]]).get_total_count() == data["requests_ok"]
