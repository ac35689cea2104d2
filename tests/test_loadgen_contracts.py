"""The load generator's typed contracts, each with its one owner: the phase lines, the
command line both ways, the result file both ways, and the run in a child process that
the sweep uses (a ``LoadConfig`` in, a ``LoadResult`` out)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import psutil
import pytest

from loadgen import LoadConfig, LoadResult
from loadgen.child import LoadChildError, run_load_in_child
from loadgen.options import config_from_args, config_to_argv
from loadgen.phase_lines import PHASES, Phase, parse_phase_line, phase_line
from loadgen.recording import BatchRecorder
from loadgen.result import SCHEMA_VERSION, ConnectionCounts, OpenLoopCounts
from muxlab.cli import build_parser
from tests.conftest import ServerFactory
from tests.test_loadgen_units import summary_result


def test_each_phase_line_parses_back_to_its_phase_and_nothing_else_does() -> None:
    assert [parse_phase_line(phase_line(p) + "\n") for p in PHASES] == ["measure", "end"]
    for other in ("muxlab load: phase warmup", "muxlab load: phase", "phase measure", ""):
        assert parse_phase_line(other) is None


CONFIGS = [
    LoadConfig(port=9000),
    LoadConfig(
        port=1,
        host="::1",
        protocol="http",
        connections=7,
        idle=3,
        processes=2,
        cpus=(0, 1),
        server_cpus=(1,),
        duration_s=0.25,
        warmup_s=0.0,
        size_bytes=12,
        pipeline=4,
        rate_rps=1234.5,
        connect_rate_cps=99.0,
        timeout_s=0.1,
        method="POST",
        path="/a?b=c",
        headers=(("Accept", "*/*"), ("X-A", "b: c")),
        allow_shared_cpus=True,
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_command_line_encodes_every_config_field(config: LoadConfig) -> None:
    args = build_parser().parse_args(["load", *config_to_argv(config)])
    assert config_from_args(args) == config


def test_a_result_file_reads_back_to_the_same_file() -> None:
    recorder = BatchRecorder()
    recorder.pending.extend([36_000, 41_500, 1_200_000])
    histogram = recorder.encode()
    result = dataclasses.replace(
        summary_result((0.5, 0.91), rate_rps=1000.0, parent_cpu=0.25),
        config=CONFIGS[1],
        histogram=histogram,
        histogram_uncorrected=histogram,
        reconnects=3,
        worker_failures=("worker 1: exited without a report",),
        open_loop=OpenLoopCounts(1000.0, 2000, 1990, 1900, 90, 10, 2.0),
        connections=ConnectionCounts(active=7, idle=3, idle_open_at_end=2, connect_errors=1),
    )
    written = json.loads(json.dumps(result.to_json()))
    read = LoadResult.from_json(written)
    assert json.loads(json.dumps(read.to_json())) == written
    assert read.config == CONFIGS[1]
    assert read.latency.count == 3 and read.client_bound and read.overloaded
    assert read.exit_status == result.exit_status == 1


@pytest.mark.parametrize(
    "change",
    [{"schema_version": 1}, {"schema_version": None}, {"open_loop": {"due": 1}}, {"config": 3}],
)
def test_a_file_that_is_not_a_schema_2_result_is_refused(change: dict[str, object]) -> None:
    data = {**summary_result((0.5,)).to_json(), **change}
    with pytest.raises(ValueError):
        LoadResult.from_json(data)


def test_a_run_in_a_child_returns_the_typed_result_and_its_phases(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "echo")
    config = LoadConfig(port=server.port, connections=2, processes=1, duration_s=0.5,
                        warmup_s=0.1, size_bytes=100)  # fmt: skip
    phases: list[Phase] = []
    children = set(psutil.Process().children())  # the server's process among them
    run = run_load_in_child(config, tmp_path / "r.json", phases.append, deadline_s=120.0)
    assert phases == ["measure", "end"]
    assert run.status == 0, run.stderr_tail
    assert run.result is not None
    assert run.result.config == dataclasses.replace(config, processes=1)
    assert run.result.errors == {} and run.result.requests_ok > 0
    assert run.result.to_json()["schema_version"] == SCHEMA_VERSION
    assert LoadResult.from_json(json.loads((tmp_path / "r.json").read_text())) == run.result
    assert set(psutil.Process().children()) == children


def test_a_silent_child_is_stopped_and_reaped(tmp_path: Path) -> None:
    silent = (sys.executable, "-c", "import time; time.sleep(60)")
    phases: list[Phase] = []
    children = set(psutil.Process().children())
    with pytest.raises(LoadChildError, match="silent"):
        run_load_in_child(LoadConfig(port=1), tmp_path / "r.json", phases.append,
                          deadline_s=0.5, command=silent)  # fmt: skip
    assert phases == []
    assert set(psutil.Process().children()) == children
    assert not (tmp_path / "r.json").exists()
