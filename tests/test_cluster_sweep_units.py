"""``muxlab sweep --cluster``: the topology record, the one-line errors, and one sweep over a
Dask cluster of worker processes on loopback (the netns lab makes them real hosts, as
root: test_cluster_sweep_netns.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.experiments import preset
from benchmarks.results import ResultsFile
from benchmarks.topology import LOCAL, ClientHost, SweepTopology
from muxlab.cli import main
from muxlab.errors import UsageError
from tests.cluster_lab import local_dask, require_distributed

CLUSTER = SweepTopology(
    mode="cluster",
    cluster="ssh:s,c1,c2",
    scheduler="tcp://10.0.0.1:8786",
    server_host="s",
    server_address="tcp://10.0.0.1:4000",
    clients=(
        ClientHost("c1", "tcp://10.0.0.2:4001", 2),
        ClientHost("c2", "tcp://10.0.0.3:4002", 2),
    ),
    skew_ms=0.25,
    skew_uncertainty_ms=0.5,
)


def test_a_cluster_topology_reads_back_as_written() -> None:
    data = json.loads(json.dumps(CLUSTER.to_json()))
    assert data == {
        "mode": "cluster",
        "cluster": "ssh:s,c1,c2",
        "scheduler": "tcp://10.0.0.1:8786",
        "server_host": {"name": "s", "address": "tcp://10.0.0.1:4000"},
        "clients": [
            {"name": "c1", "address": "tcp://10.0.0.2:4001", "processes": 2},
            {"name": "c2", "address": "tcp://10.0.0.3:4002", "processes": 2},
        ],
        "skew_ms": 0.25,
        "skew_uncertainty_ms": 0.5,
    }
    assert SweepTopology.from_json(data) == CLUSTER
    local = SweepTopology(mode="cluster", cluster="tcp://h:1", scheduler="tcp://h:1")
    assert SweepTopology.from_json(json.loads(json.dumps(local.to_json()))) == local


def test_a_local_topology_says_local_and_a_file_without_one_reads_as_local() -> None:
    assert LOCAL.to_json() == {"mode": "local"}
    assert SweepTopology.from_json({"mode": "local"}) == LOCAL
    assert SweepTopology.from_json(None) == LOCAL
    bad: object
    for bad in ({"mode": "moon"}, [], {"mode": "cluster", "cluster": "x"}):
        with pytest.raises(ValueError, match="topology"):
            SweepTopology.from_json(bad)


def test_the_results_loader_reads_the_topology_and_old_files(tmp_path: Path) -> None:
    plan = preset("quick")
    written = ResultsFile.create(tmp_path / "new", "new", plan, ["muxlab"], {}, {}, [],
                                 topology=CLUSTER)  # fmt: skip
    assert json.loads(written.path.read_text())["topology"]["mode"] == "cluster"
    assert ResultsFile.load(tmp_path / "new").topology == CLUSTER
    old = ResultsFile.create(tmp_path / "old", "old", plan, ["muxlab"], {}, {}, [])
    del old.data["topology"]  # as a file written before the field existed
    old.save()
    assert ResultsFile.load(tmp_path / "old").topology == LOCAL
    old.data["topology"] = {"mode": "cluster"}
    old.save()
    with pytest.raises(UsageError, match="malformed sweep topology"):
        ResultsFile.load(tmp_path / "old")


def sweep_error(args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    status = main(["sweep", *args, "--out-dir", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert status == 2, captured
    [line] = captured.err.splitlines()
    assert not (tmp_path / "out").exists()  # refused before anything ran or was written
    return line


def test_server_host_without_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = sweep_error(["--server-host", "client1"], capsys, tmp_path)
    assert line == "muxlab sweep: error: --server-host names a Dask worker: it needs --cluster"


def test_loadgen_with_cluster_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    line = sweep_error(["--cluster", "tcp://127.0.0.1:1", "--loadgen", "wrk"], capsys, tmp_path)
    assert line == (
        "muxlab sweep: error: --loadgen replaces the load generator here: not with --cluster"
    )


def test_an_unknown_server_host_is_one_line_naming_the_workers() -> None:
    require_distributed()
    from benchmarks.cluster_sweep import choose_server_host
    from loadgen.cluster import Host

    hosts = [Host("client1", "tcp://10.0.0.2:1", "10.0.0.2"),
             Host("client2", "tcp://10.0.0.3:1", "10.0.0.3")]  # fmt: skip
    assert choose_server_host(hosts, "client2", "tcp://s:1") == hosts[1]
    assert choose_server_host(hosts, "tcp://10.0.0.2:1", "tcp://s:1") == hosts[0]
    with pytest.raises(UsageError) as caught:
        choose_server_host(hosts, "server", "tcp://s:1")
    assert str(caught.value) == (
        "--server-host server: no such Dask worker in the cluster at tcp://s:1 "
        "(workers: client1, client2)"
    )


@pytest.mark.timeout(400)
def test_a_sweep_on_loopback_workers_starts_the_server_through_dask(tmp_path: Path) -> None:
    """Without root: client1 sends the load, the server runs under client2's worker; and an
    unknown --server-host on that same cluster is one line, exit 2."""
    require_distributed()
    out = tmp_path / "out"
    with local_dask(tmp_path, ["client1", "client2"]) as dask:
        argv = [sys.executable, "-m", "muxlab", "sweep", "--cluster", dask.address,
                "--preset", "quick", "--experiments", "active", "--impls", "epoll-lt",
                "--connections", "2", "--repeats", "1", "--warmup", "0.3", "--duration", "2",
                "--out-dir", str(out), "--no-charts", "--quiet"]  # fmt: skip
        unknown = subprocess.run([*argv, "--server-host", "nope", "--run-id", "bad"],
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        proc = subprocess.run([*argv, "--server-host", "client2", "--run-id", "ok"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.splitlines()[-1] == (
        f"muxlab sweep: error: --server-host nope: no such Dask worker in the cluster at "
        f"{dask.address} (workers: client1, client2)"
    )
    assert not (out / "bad").exists()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = ResultsFile.load(out / "ok")
    topology = results.topology
    assert (topology.server_host, [c.name for c in topology.clients]) == ("client2", ["client1"])
    [point] = results.data["points"]
    assert point["status"] == "done", point["reason"]
    [run] = [r for r in point["repeats"] if r["valid"]]
    load = json.loads((results.run_dir / run["loadgen_json"]).read_text())
    assert [h["name"] for h in load["hosts"]] == ["client1"]
    assert load["errors"] == {} and run["requests_ok"] == load["hosts"][0]["requests_ok"] > 0
    assert run["server_connections_open"] == 2
    assert run["server_connections_accepted"] == 2 + 1  # and client1's preflight probe


def test_a_resumed_cluster_sweep_refuses_other_hosts_unless_forced() -> None:
    from benchmarks.cluster_cli import check_same_hosts

    check_same_hosts(CLUSTER, CLUSTER, force=False)
    fewer = replace(CLUSTER, clients=CLUSTER.clients[:1])
    with pytest.raises(UsageError, match=r"hosts changed .*clients \['c1', 'c2'\], server s; "):
        check_same_hosts(CLUSTER, fewer, force=False)
    check_same_hosts(CLUSTER, fewer, force=True)


def test_a_cluster_sweep_leaves_out_the_kinds_loaded_from_this_machine() -> None:
    from benchmarks.cluster_cli import local_only

    plan = preset("default")
    kept, notes = local_only(plan)
    assert {e.kind for e in plan.experiments} >= {"herd", "cores"}
    assert [e.name for e in kept.experiments] == [
        e.name for e in plan.experiments if e.kind not in ("herd", "cores")
    ]
    assert len(notes) == 1 and "herd" in notes[0] and "cores" in notes[0]
    assert local_only(kept) == (kept, [])
