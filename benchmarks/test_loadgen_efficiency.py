"""How cheaply ``muxlab load`` drives a fast server, and what recording a latency costs.

A load generator is only as good as its headroom: the client must not be what limits a
measurement. ``test_client_efficiency`` runs one worker on one CPU against the fastest
server at hand (nginx with one worker when installed, else muxlab's epoll-lt server, on
another CPU) at 1, 100 and 1000 connections; ``extra_info`` carries requests/s and the
client's CPU time per request. ``test_recording_overhead`` times the hot loop's share of
latency recording (one list append) plus the batched flush into the HdrHistogram.
The benchmark's time column is the wall time of a fixed-length run, not the result.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import pytest

from loadgen import LoadConfig, run_load
from loadgen.recording import BatchRecorder
from servers.peers import NginxServer, nginx_path
from servers.process import ServerProcess

DURATION_S = 5.0
WARMUP_S = 1.0


def pinned_cpus() -> tuple[int, int]:
    """(server CPU, client CPU): two different CPUs when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[1] if len(cpus) > 1 else cpus[0]


def fast_http_server(cpu: int) -> AbstractContextManager[NginxServer | ServerProcess]:
    if nginx_path() is not None:
        return NginxServer("http", cpu=cpu)
    return ServerProcess("epoll-lt", "http", cpu=cpu)


@pytest.fixture(scope="module")
def server() -> Iterator[NginxServer | ServerProcess]:
    server_cpu, _ = pinned_cpus()
    with fast_http_server(server_cpu) as running:
        yield running


@pytest.mark.parametrize("connections", [1, 100, 1000])
def test_client_efficiency(
    benchmark: pytest.FixtureRequest, server: NginxServer | ServerProcess, connections: int
) -> None:
    _, client_cpu = pinned_cpus()
    config = LoadConfig(
        port=server.port,
        protocol="http",
        connections=connections,
        processes=1,
        cpus=(client_cpu,),
        duration_s=DURATION_S,
        warmup_s=WARMUP_S,
    )
    benchmark.group = "loadgen: one client process, HTTP, closed loop"  # type: ignore[attr-defined]
    result = benchmark.pedantic(run_load, args=(config,), rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert result.errors == {}
    assert result.requests_ok > 0
    cpu_s = result.client_cpu[0] * result.duration_s
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        server="nginx" if isinstance(server, NginxServer) else "muxlab epoll-lt",
        connections=connections,
        rps=round(result.rps),
        client_cpu=round(result.client_cpu[0], 3),
        client_cpu_us_per_request=round(cpu_s / result.requests_ok * 1e6, 3),
        p50_us=result.latency.p50,
        p99_us=result.latency.p99,
    )


def test_recording_overhead(benchmark: pytest.FixtureRequest) -> None:
    """What recording costs inside the window: one append per latency, one flush per batch.

    The fold into the HdrHistogram (one ``record_value`` per distinct value) happens after
    the window; its time is reported separately as ``fold_ms``.
    """
    rng = random.Random(7)
    # Spread like latencies at 100 connections (about 1 ms, in nanoseconds): nearly every
    # value distinct.
    latencies_ns = [int(rng.lognormvariate(13.9, 1.0)) for _ in range(100_000)]
    batches = [latencies_ns[i : i + 10_000] for i in range(0, len(latencies_ns), 10_000)]

    def record_window() -> BatchRecorder:
        recorder = BatchRecorder()
        append = recorder.pending.append
        for batch in batches:
            for value in batch:
                append(value)
            recorder.flush()  # as the worker does every 100 ms
        return recorder

    benchmark.group = "loadgen: latency recording"  # type: ignore[attr-defined]
    recorder = benchmark(record_window)  # type: ignore[operator]
    started = time.perf_counter()
    histogram = recorder.histogram()
    fold_s = time.perf_counter() - started
    assert histogram.get_total_count() == len(latencies_ns)
    mean_s = benchmark.stats.stats.mean  # type: ignore[attr-defined]
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        values=len(latencies_ns),
        ns_per_value=round(mean_s / len(latencies_ns) * 1e9, 1),
        fold_ms=round(fold_s * 1e3, 1),
    )
