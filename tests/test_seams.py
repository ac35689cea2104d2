"""The typed seams between parts: one owner per fact, and the typed path agrees with the file.

- whether an implementation takes ``--et-drain`` is its registry entry's, read from its
  backend class;
- the protocol names are one definition both ends share;
- an open-loop step built from the typed ``LoadResult`` equals the one built from the same
  result file by its keys (a committed reference run's file).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest

from benchmarks.experiments import ExperimentSpec
from benchmarks.open_loop import step_from_load, step_from_result
from benchmarks.results import RunResult
from loadgen.config import LOAD_PROTOCOLS, LoadProtocol
from loadgen.protocols import CLIENTS
from loadgen.result import LoadResult
from servers import registry
from servers.backends import BACKENDS
from servers.protocols import PROTOCOL_NAMES, PROTOCOLS, ProtocolName

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "loadgen"


def open_loop_file() -> tuple[Path, dict[str, Any]]:
    """A capacity step of the committed reference run (io_uring, 20 hot beside 1,000 cold)
    with late slots, so that every field of a step is exercised."""
    for path in sorted(REFERENCE.glob("io_uring_echo_c20_i1000_s1024_p1_r*-r1.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        if data["open_loop"]["late"] > 0:
            return path, data
    raise AssertionError("the reference run has no io_uring capacity step with late slots")


def test_takes_et_drain_is_each_backend_class_short_read_drain() -> None:
    for entry in registry.entries():
        cls = BACKENDS.get(entry.name)  # type: ignore[call-overload]
        wanted = bool(getattr(cls, "short_read_drain", False))
        assert entry.takes_et_drain is wanted, entry.name
        assert registry.takes_et_drain(entry.name) is wanted, entry.name
    assert registry.takes_et_drain("epoll-et")
    assert not registry.takes_et_drain("epoll-lt")
    assert not registry.takes_et_drain("uvloop-protocol")
    assert not registry.takes_et_drain("no-such-implementation")


def test_an_ltet_grid_adds_drain_variants_only_where_the_registry_allows() -> None:
    spec = ExperimentSpec(
        "ltet", "ltet", ("epoll-lt", "epoll-et"), et_drains=("strict", "short-read")
    )
    drains = {(p.impl, p.et_drain) for p in spec.points()}
    assert drains == {("epoll-lt", None), ("epoll-et", None), ("epoll-et", "short-read")}


def test_the_load_generator_and_the_server_share_one_list_of_protocols() -> None:
    assert get_args(LoadProtocol) == get_args(ProtocolName)
    assert LOAD_PROTOCOLS == PROTOCOL_NAMES == ("echo", "http")
    assert set(CLIENTS) == set(PROTOCOLS) == set(PROTOCOL_NAMES)


def run_record() -> RunResult:
    return RunResult(
        repeat=1, started_at="2026-01-01T00:00:00+00:00", loadgen_status=0,
        loadgen_json="loadgen/x.json", window_s=0.8, requests_ok=0, requests_total=0,
        errors={}, latency_us={}, client_cpu=(0.5,), client_bound=False, server_cpu_s=0.1,
        server_delta={}, server_replies_window=0, server_replies_total=0, idle_open_at_end=0,
        metrics={"server_cpu_util": 0.5, "cpu_us_per_request": 12.5},
    )  # fmt: skip


def test_a_step_from_the_typed_result_equals_the_step_from_its_file() -> None:
    _, data = open_loop_file()
    offered = float(data["open_loop"]["offered_rps"])
    spec = ExperimentSpec("latency", "latency", ("io_uring",), connections=(20,), idle=(1000,))
    point = replace(spec.loads()[0], rate_rps=offered)
    typed = step_from_result(point, run_record(), LoadResult.from_json(data))
    keyed = step_from_load(point, run_record(), data)
    # The file rounds the rates to 3 decimals; the typed result derives them from counts.
    assert typed.achieved_rps == pytest.approx(keyed.achieved_rps, abs=1e-3)
    assert typed.sent_rps == pytest.approx(keyed.sent_rps, abs=1e-3)
    assert replace(typed, achieved_rps=0.0, sent_rps=0.0) == replace(
        keyed, achieved_rps=0.0, sent_rps=0.0
    )
    slots = data["open_loop"]
    assert (typed.offered_rps, typed.late, typed.refused) == (
        offered,
        slots["late"],
        slots["refused"],
    )
    assert typed.late is not None and typed.late > 0
    assert typed.cpu_us_per_request == 12.5 and typed.repeat == 1
