"""Fixed-rate latency: the rate comes from the capacities, a flag, or a default; kept on resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import capacity, latency
from benchmarks.experiments import ExperimentSpec, OpenLoopSpec
from benchmarks.open_loop import Step
from muxlab.cli import main
from tests.open_loop_stubs import StubMeasure, StubServer, empty_results, knees, plan_with

SPEC = OpenLoopSpec(start_rps=4000.0, factor=2.0, precision=0.05, max_steps=12, repeats=2)
CAPACITY = ExperimentSpec(
    "capacity",
    "capacity",
    ("poll", "epoll-lt"),
    connections=(20,),
    idle=(0, 10_000),
    open_loop=SPEC,
)
LATENCY = ExperimentSpec(
    "latency", "latency", ("select", "poll", "epoll-lt"), connections=(1, 100, 2000), open_loop=SPEC
)


def flat_servers() -> dict[tuple[str, int], StubServer]:
    return {(impl, 0): StubServer(1e9) for impl in LATENCY.impls}


def test_rate_is_half_the_lowest_capacity_of_the_run(tmp_path: Path) -> None:
    results = empty_results(tmp_path / "run", plan_with(CAPACITY, LATENCY))
    capacity.run_capacity(results, CAPACITY, StubMeasure(knees(CAPACITY.impls, CAPACITY.idle)))
    lowest = min(s["capacity_rps"] for s in capacity.searches(results.data))
    stub = StubMeasure(flat_servers())
    latency.run_latency(results, LATENCY, stub)
    rate = capacity.round_rate(latency.CAPACITY_FRACTION * lowest)
    assert stub.calls and {p.rate_rps for p in stub.calls} == {rate}
    records = latency.records(results.data)
    assert {r["spec"]["rate_rps"] for r in records} == {rate}
    assert all("lowest capacity" in r["rate_source"] for r in records)


def test_a_given_rate_wins_and_without_capacities_the_default_is_used(tmp_path: Path) -> None:
    given = replace(LATENCY, open_loop=replace(SPEC, rate_rps=777.0))
    results = empty_results(tmp_path / "a", plan_with(given))
    stub = StubMeasure(flat_servers())
    latency.run_latency(results, given, stub)
    assert {p.rate_rps for p in stub.calls} == {777.0}
    results = empty_results(tmp_path / "b", plan_with(LATENCY))
    stub = StubMeasure(flat_servers())
    latency.run_latency(results, LATENCY, stub)
    assert {p.rate_rps for p in stub.calls} == {latency.DEFAULT_RATE_RPS}


def test_points_repeats_interleaved_and_select_skipped_past_its_ceiling(tmp_path: Path) -> None:
    results = empty_results(tmp_path / "run", plan_with(LATENCY))
    stub = StubMeasure(flat_servers())
    latency.run_latency(results, LATENCY, stub)
    order = [(p.connections, p.impl) for p in stub.calls]
    one_repeat = [(1, "select"), (1, "poll"), (1, "epoll-lt"), (100, "select"), (100, "poll")]
    one_repeat += [(100, "epoll-lt"), (2000, "poll"), (2000, "epoll-lt")]
    assert order == one_repeat * 2  # ABAB: every implementation once per round
    by_key = {
        (r["spec"]["impl"], r["spec"]["connections"]): r for r in latency.records(results.data)
    }
    skipped = by_key[("select", 2000)]
    assert skipped["status"] == "skipped" and "descriptor ceiling" in skipped["reason"]
    done = by_key[("poll", 100)]
    assert done["status"] == "done" and len(done["repeats"]) == 2
    assert done["summary"]["p99_us"] == {"median": 300.0, "min": 300.0, "max": 300.0, "n": 2}
    assert done["summary"]["p999_us"]["median"] == 600.0


def test_resume_keeps_the_stored_rate_and_measures_only_what_is_missing(tmp_path: Path) -> None:
    given = replace(LATENCY, open_loop=replace(SPEC, rate_rps=500.0))
    results = empty_results(tmp_path / "run", plan_with(given))
    stub = StubMeasure(flat_servers())

    def interrupted(point: object, repeat: int) -> Step:
        if len(stub.calls) == 5:
            raise KeyboardInterrupt
        return stub(point, repeat)  # type: ignore[arg-type]

    with pytest.raises(KeyboardInterrupt):
        latency.run_latency(results, given, interrupted)
    # The plan changes its rate on resume (as a stale flag would); the stored one is kept.
    changed = replace(LATENCY, open_loop=replace(SPEC, rate_rps=999.0))
    reloaded = type(results).load(results.run_dir)
    resumed = StubMeasure(flat_servers())
    latency.run_latency(reloaded, changed, resumed)
    assert len(stub.calls) + len(resumed.calls) == 16
    assert {p.rate_rps for p in resumed.calls} == {500.0}
    done = [r for r in latency.records(reloaded.data) if r["status"] == "done"]
    assert len(done) == 8 and all(len(r["repeats"]) == 2 for r in done)


def test_an_overloaded_point_is_kept_and_flagged(tmp_path: Path) -> None:
    given = replace(
        LATENCY, impls=("poll",), connections=(100,), open_loop=replace(SPEC, rate_rps=5000.0)
    )
    results = empty_results(tmp_path / "run", plan_with(given))
    latency.run_latency(results, given, StubMeasure({("poll", 0): StubServer(4000.0)}))
    (record,) = latency.records(results.data)
    assert record["status"] == "done" and record["overloaded"]
    assert "overloaded" in "\n".join(latency.format_latency(results.data))


def test_sweep_flags_set_the_slo_and_the_latency_rate_and_are_refused_on_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import argparse

    from benchmarks import open_loop_cli
    from benchmarks.experiments import preset

    args = argparse.Namespace(slo_ms=2.5, latency_rate=321.0)
    plan = open_loop_cli.apply(preset("quick"), args)
    specs = {e.kind: e.open_loop for e in plan.experiments if e.open_loop is not None}
    assert specs["capacity"] is not None and specs["capacity"].slo_ms == 2.5
    assert specs["latency"] is not None and specs["latency"].rate_rps == 321.0
    status = main(["sweep", "--resume", "r", "--slo-ms", "3", "--out-dir", str(tmp_path)])
    assert status == 2
    assert "drop --slo-ms" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--latency-rate", "-5"])
    assert "must be > 0" in capsys.readouterr().err


def test_open_loop_spec_survives_the_results_file(tmp_path: Path) -> None:
    from benchmarks.experiments import plan_from_json, plan_to_json

    plan = plan_with(CAPACITY, LATENCY)
    stored = json.loads(json.dumps(plan_to_json(plan)))
    assert plan_from_json(stored) == plan


def test_toml_open_loop_table(tmp_path: Path) -> None:
    from benchmarks.experiments import load_toml
    from muxlab.errors import UsageError

    path = tmp_path / "plan.toml"
    path.write_text(
        '[[experiments]]\nname = "cap"\nkind = "capacity"\nimpls = ["poll"]\nidle = [0]\n'
        "[experiments.open_loop]\nslo_ms = 2\nmax_steps = 6\n"
    )
    (cap,) = load_toml(path).experiments
    assert cap.open_loop == OpenLoopSpec(slo_ms=2, max_steps=6)
    path.write_text(path.read_text() + "speed = 3\n")
    with pytest.raises(UsageError, match="unknown key"):
        load_toml(path)
