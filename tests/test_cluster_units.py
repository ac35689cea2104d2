"""The parts of ``--cluster`` that need no cluster: parsing, shares, skew, exact merging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from loadgen import cluster_cli
from loadgen.cluster_result import (
    HOST_LOST,
    ClusterResult,
    HostClock,
    HostOutcome,
    Topology,
    merge_host_results,
)
from loadgen.config import LoadConfig
from loadgen.recording import LatencySummary, encode, new_histogram
from loadgen.result import ConnectionCounts, LoadResult
from muxlab.cli import main
from muxlab.errors import SetupError, UsageError
from tests.cluster_lab import require_distributed

CONFIG = LoadConfig(port=7000, connections=4, processes=1, duration_s=2.0)


def host_result(latencies_ns: list[int], cpu: float, share: LoadConfig) -> LoadResult:
    histogram = new_histogram()
    for value in latencies_ns:
        histogram.record_value(value)
    return LoadResult(
        config=share, environment={"hostname": "h"}, requests_ok=len(latencies_ns),
        requests_total=len(latencies_ns), errors={}, duration_s=2.0, bytes_sent=64,
        bytes_received=64, per_second=(len(latencies_ns) // 2,) * 2, client_cpu=(cpu,),
        connections=ConnectionCounts(share.connections, 0, 0, 0),
        latency=LatencySummary.of(histogram), latency_uncorrected=None,
        histogram=encode(histogram), histogram_uncorrected=None, parent_cpu=0.1,
    )  # fmt: skip


def outcome(name: str, result: LoadResult | None, failure: str | None = None) -> HostOutcome:
    share = LoadConfig(port=7000, connections=2, processes=1)
    return HostOutcome(name, f"tcp://{name}:1", share, HostClock(1_000_000, 50_000), result,
                       failure, HOST_LOST if failure else None)  # fmt: skip


def test_cluster_addresses_parse_or_are_refused() -> None:
    require_distributed()
    from loadgen.cluster import parse_cluster

    assert parse_cluster("ssh:a, b") == ("a", "b")
    assert parse_cluster("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"
    for bad in ("ssh:", "ssh:a,,b", "10.0.0.1", "tcp://host"):
        with pytest.raises(UsageError, match="--cluster"):
            parse_cluster(bad)


def test_connections_and_rates_split_evenly_over_hosts() -> None:
    require_distributed()
    from loadgen.cluster import host_shares

    config = LoadConfig(port=1, connections=5, idle=3, rate_rps=1000.0, connect_rate_cps=80.0)
    shares = host_shares(config, 2)
    assert [s.connections for s in shares] == [3, 2]
    assert [s.idle for s in shares] == [2, 1]
    assert [s.rate_rps for s in shares] == [600.0, 400.0]
    assert [s.connect_rate_cps for s in shares] == [50.0, 30.0]
    with pytest.raises(UsageError, match="cannot be split over 6 hosts"):
        host_shares(config, 6)


def test_a_loopback_server_address_is_refused_when_client_hosts_are_remote() -> None:
    require_distributed()
    from loadgen.cluster import Host, check_reachable_target

    remote = [Host("client1", "tcp://198.18.0.2:1", "198.18.0.2"),
              Host("client2", "tcp://127.0.0.1:2", "127.0.0.1")]  # fmt: skip
    with pytest.raises(UsageError, match=r"--host 127\.0\.0\.1 is loopback.* client1 is"):
        check_reachable_target(LoadConfig(port=1, host="127.0.0.1"), remote)
    with pytest.raises(UsageError, match="--host localhost is loopback"):
        check_reachable_target(LoadConfig(port=1, host="localhost"), remote)
    check_reachable_target(LoadConfig(port=1, host="198.18.0.1"), remote)
    check_reachable_target(LoadConfig(port=1, host="127.0.0.1"), remote[1:])


def test_clock_skew_over_the_tolerance_is_refused_naming_both_hosts() -> None:
    require_distributed()
    from loadgen.cluster import Host, check_skew

    hosts = [Host("client1", "a"), Host("client2", "b"), Host("client3", "c")]
    clocks = {"a": HostClock(0, 100_000), "b": HostClock(20_000_000, 100_000),
              "c": HostClock(3_000_000, 100_000)}  # fmt: skip
    with pytest.raises(SetupError, match=r"hosts client2 and client1 differ by 20\.000"):
        check_skew(hosts, clocks, max_skew_ns=5_000_000)
    # 20 ms measured +- 0.2 ms is within a 25 ms tolerance.
    assert check_skew(hosts, clocks, 25_000_000) == HostClock(20_000_000, 200_000)


def test_a_skew_within_the_probes_uncertainty_is_not_refused() -> None:
    require_distributed()
    from loadgen.cluster import Host, check_skew

    hosts = [Host("client1", "a"), Host("client2", "b")]
    clocks = {"a": HostClock(0, 4_000_000), "b": HostClock(8_000_000, 4_000_000)}
    assert check_skew(hosts, clocks, 1_000_000).offset_ns == 8_000_000
    clocks["b"] = HostClock(9_000_001, 4_000_000)
    with pytest.raises(SetupError):
        check_skew(hosts, clocks, 1_000_000)


def test_host_histograms_merge_exactly() -> None:
    one = [1_000 * i + 7 for i in range(1, 4000)]
    two = [50_000_000 + 13 * i for i in range(2500)]
    share = LoadConfig(port=7000, connections=2, processes=1)
    hosts = [outcome("client1", host_result(one, 0.25, share)),
             outcome("client2", host_result(two, 0.95, share))]  # fmt: skip
    merged = merge_host_results(CONFIG, {}, hosts)
    expected = new_histogram()
    for value in one + two:
        expected.record_value(value)
    decoded = HdrHistogram.decode(merged.histogram.encode())
    assert decoded.get_total_count() == len(one) + len(two) == merged.requests_ok
    for percentile in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert decoded.get_value_at_percentile(percentile) == expected.get_value_at_percentile(
            percentile
        )
    assert merged.latency == LatencySummary.of(expected)
    assert merged.client_cpu == (0.25, 0.95) and merged.client_bound
    assert merged.config.processes == 2
    assert merged.per_second == ((len(one) // 2) + (len(two) // 2),) * 2


def test_a_lost_host_is_an_error_named_in_the_result() -> None:
    share = LoadConfig(port=7000, connections=2, processes=1)
    hosts = (outcome("client1", host_result([5_000] * 10, 0.2, share)),
             outcome("client2", None, "lost: its Dask worker left mid-run"))  # fmt: skip
    merged = merge_host_results(CONFIG, {}, hosts)
    result = ClusterResult(merged, hosts, Topology("tcp://s:1", HostClock(0, 0), 5_000_000, 1))
    assert merged.errors == {HOST_LOST: 1} and result.exit_status == 1
    assert result.failures == (
        "host client2 (tcp://client2:1): lost: its Dask worker left mid-run",
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["schema_version"] == 2 and data["requests_ok"] == 10
    assert [h["requests_ok"] for h in data["hosts"]] == [10, 0]
    assert data["hosts"][1]["failure"] == "lost: its Dask worker left mid-run"
    assert data["hosts"][0]["skew_ms"] == 1.0 and data["hosts"][0]["client_cpu"] == [0.2]
    assert data["cluster"] == {"cluster": "tcp://s:1", "hosts": 2, "skew_ms": 0.0,
                               "skew_uncertainty_ms": 0.0, "max_skew_ms": 5.0,
                               "start_lead_ms": 0.0}  # fmt: skip


def test_cluster_without_dask_is_one_line_saying_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(cluster_cli, "find_spec", lambda name: None)
    out = tmp_path / "r.json"
    status = main(["load", "--port", "1", "--cluster", "tcp://127.0.0.1:8786",
                   "--json", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.splitlines() == [
        "muxlab load: error: --cluster needs distributed, not installed: "
        'pip install "muxlab[cluster]"'
    ]
    assert not out.exists()


class SchedulerWithWorkers:
    """What list_hosts reads of a Dask client: the scheduler's worker table, asked afresh
    (``client.sync(client.scheduler.identity, n_workers=-1)``)."""

    def __init__(self, workers: dict[str, dict[str, object]]) -> None:
        self.workers = workers
        self.scheduler = self

    def identity(self, n_workers: int) -> dict[str, object]:
        assert n_workers == -1  # every worker, not the first few
        return {"workers": self.workers}

    def sync(self, function: Any, **kwargs: Any) -> Any:
        return function(**kwargs)


def test_hosts_are_named_by_worker_name_else_host_and_never_twice() -> None:
    require_distributed()
    from loadgen.cluster import Host, list_hosts

    client: Any = SchedulerWithWorkers({
        "tcp://10.0.0.1:1": {"name": "client1", "host": "10.0.0.1"},
        "tcp://10.0.0.2:1": {"name": 0, "host": "10.0.0.2"},
        "tcp://10.0.0.3:1": {"name": 1, "host": "10.0.0.3"},
        "tcp://10.0.0.3:2": {"name": 2, "host": "10.0.0.3"},
    })  # fmt: skip
    assert list_hosts(client, "tcp://s:1") == [
        Host("client1", "tcp://10.0.0.1:1", "10.0.0.1"),
        Host("10.0.0.2", "tcp://10.0.0.2:1", "10.0.0.2"),
        Host("tcp://10.0.0.3:1", "tcp://10.0.0.3:1", "10.0.0.3"),
        Host("tcp://10.0.0.3:2", "tcp://10.0.0.3:2", "10.0.0.3"),
    ]
    with pytest.raises(SetupError, match="has no workers"):
        list_hosts(SchedulerWithWorkers({}), "tcp://s:1")  # type: ignore[arg-type]
