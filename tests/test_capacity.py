"""The adaptive capacity search, against stub servers whose knee is known."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import capacity
from benchmarks.capacity import capacity_of, next_rate, run_capacity, search
from benchmarks.experiments import ExperimentSpec, OpenLoopSpec
from benchmarks.open_loop import Step, step_from_load
from benchmarks.results import RunResult
from benchmarks.stats import ratio_text
from benchmarks.sweep import PointFailed, load_config
from tests.open_loop_stubs import StubMeasure, StubServer, empty_results, knees, plan_with, step

SPEC = OpenLoopSpec(
    slo_ms=5.0, start_rps=4000.0, factor=2.0, precision=0.05, max_steps=14, overload_steps=1
)


def step_bound(spec: OpenLoopSpec, start: float, knee: float) -> int:
    """Coarse steps to pass the knee, bisections to the precision, the overload steps."""
    coarse = math.ceil(abs(math.log(knee / start, spec.factor))) + 1
    bisections = math.ceil(math.log2(math.log(spec.factor) / math.log(1 + spec.precision)))
    return coarse + bisections + spec.overload_steps


@pytest.mark.parametrize("knee", [1_500.0, 3_000.0, 37_000.0, 150_000.0])
@pytest.mark.parametrize("start", [4_000.0, 100_000.0])
def test_knee_is_found_within_the_precision_in_bounded_steps(knee: float, start: float) -> None:
    server = StubServer(knee)
    steps = search(SPEC, start, server.at)
    found = capacity_of(steps, SPEC.slo_ms)
    assert found is not None
    assert found <= knee  # every good step kept up, so the knee is at or above it
    bad_above = min(
        s.offered_rps for s in steps if not s.good(SPEC.slo_ms) and s.offered_rps > found
    )
    assert bad_above > knee  # ... and below the lowest rate that failed
    assert bad_above / found - 1 <= SPEC.precision
    assert len(steps) <= step_bound(SPEC, start, knee)
    assert len({s.offered_rps for s in steps}) == len(steps), "a rate was measured twice"
    # Past the knee: the overload step sits above every other rate and shows the plateau.
    top = max(steps, key=lambda s: s.offered_rps)
    assert top.overloaded and top.achieved_rps == knee


def test_capacity_is_limited_by_the_latency_objective() -> None:
    server = StubServer(knee_rps=80_000.0, slo_knee_rps=20_000.0)
    steps = search(SPEC, 4000.0, server.at)
    found = capacity_of(steps, SPEC.slo_ms)
    assert found is not None and 20_000 / 1.05 <= found <= 20_000
    # Between the two knees the server keeps up but misses the SLO: bad, not overloaded.
    between = [s for s in steps if 20_000 < s.offered_rps <= 80_000]
    assert between and all(not s.overloaded and not s.good(SPEC.slo_ms) for s in between)


def test_capacity_is_the_highest_good_offered_rate() -> None:
    steps = [
        step(1000.0, 1000.0, 100.0),
        step(2000.0, 1995.0, 100.0),  # 99.75% of offered: good
        step(3000.0, 2950.0, 100.0),  # 98.3%: overloaded
        step(2500.0, 2500.0, 6000.0),  # kept up, p99 over 5 ms
    ]
    assert capacity_of(steps, 5.0) == 2000.0
    assert capacity_of(steps, 7.0) == 2500.0
    assert capacity_of(steps[2:3], 5.0) is None


@pytest.mark.parametrize("window_s", [0.5, 1.0, 2.0])
def test_a_server_that_is_never_good_ends_the_search_at_the_floor(window_s: float) -> None:
    """The floor is where the window still holds enough requests for a p99."""
    spec = replace(SPEC, max_steps=100, window_s=window_s)
    server = StubServer(knee_rps=1.0)
    steps = search(spec, 30_000.0, server.at)
    assert capacity_of(steps, spec.slo_ms) is None
    rates = [s.offered_rps for s in steps]
    assert rates == sorted(rates, reverse=True)
    assert rates[-1] == capacity.min_rate(spec) == capacity.MIN_SAMPLES / window_s
    assert next_rate(spec, 30_000.0, steps) is None
    # A start below the floor starts at the floor.
    assert next_rate(spec, 10.0, []) == capacity.min_rate(spec)


def test_max_steps_bounds_the_search() -> None:
    server = StubServer(knee_rps=1e9)  # never saturates: the search would climb forever
    steps = search(replace(SPEC, max_steps=5), 4000.0, server.at)
    assert [s.offered_rps for s in steps] == [4000.0, 8000.0, 16000.0, 32000.0, 64000.0]


def test_the_next_rate_depends_only_on_the_steps_measured() -> None:
    """Resuming from the stored steps continues exactly where the search stopped."""
    server = StubServer(37_000.0)
    whole = search(SPEC, 4000.0, server.at)
    for cut in range(len(whole)):
        assert search(SPEC, 4000.0, server.at, whole[:cut]) == whole


# -- the search inside a sweep: stored, resumable, skipped by the registry ------------


def experiment(**changes: object) -> ExperimentSpec:
    base = ExperimentSpec(
        "capacity",
        "capacity",
        ("select", "poll", "epoll-lt"),
        connections=(20,),
        idle=(0, 1000, 10_000),
        open_loop=SPEC,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_every_step_is_saved_before_the_next_one(tmp_path: Path) -> None:
    exp = experiment(impls=("poll",), idle=(1000,))
    results = empty_results(tmp_path / "run", plan_with(exp))
    stub = StubMeasure(knees(("poll",), (1000,)))
    on_disk: list[int] = []

    def measure(point: object, repeat: int) -> Step:
        stored = json.loads(results.path.read_text()).get("capacity", [])
        on_disk.append(len(stored[0]["steps"]) if stored else 0)
        return stub(point, repeat)  # type: ignore[arg-type]

    run_capacity(results, exp, measure)
    assert on_disk == list(range(len(on_disk)))
    saved = json.loads(results.path.read_text())["capacity"]
    assert len(saved) == 1 and saved[0]["status"] == "done"
    assert len(saved[0]["steps"]) == len(stub.calls) == len(on_disk)
    assert saved[0]["capacity_rps"] == capacity_of(
        [Step.from_json(s) for s in saved[0]["steps"]], SPEC.slo_ms
    )


def test_select_is_skipped_where_its_descriptor_ceiling_is_passed(tmp_path: Path) -> None:
    exp = experiment()
    results = empty_results(tmp_path / "run", plan_with(exp))
    stub = StubMeasure(knees(exp.impls, exp.idle))
    run_capacity(results, exp, stub)
    status = {(s["spec"]["impl"], s["spec"]["idle"]): s for s in capacity.searches(results.data)}
    assert status[("select", 0)]["status"] == "done"
    for cold in (1000, 10_000):
        skipped = status[("select", cold)]
        assert skipped["status"] == "skipped" and not skipped["steps"]
        assert "descriptor ceiling of 1024" in skipped["reason"]
    assert not [p for p in stub.calls if p.impl == "select" and p.idle > 0]
    assert all(
        status[(impl, c)]["status"] == "done" for impl in ("poll", "epoll-lt") for c in exp.idle
    )


def test_a_search_starts_at_the_capacity_found_with_fewer_cold(tmp_path: Path) -> None:
    exp = experiment(impls=("poll",), idle=(0, 1000))
    results = empty_results(tmp_path / "run", plan_with(exp))
    run_capacity(results, exp, StubMeasure(knees(("poll",), (0, 1000))))
    first, second = capacity.searches(results.data)
    assert first["start_rps"] == SPEC.start_rps
    assert second["start_rps"] == first["capacity_rps"]
    assert second["steps"][0]["offered_rps"] == first["capacity_rps"]


def test_after_a_search_with_no_good_step_the_next_starts_at_its_floor(tmp_path: Path) -> None:
    exp = experiment(impls=("poll",), idle=(0, 1000))
    results = empty_results(tmp_path / "run", plan_with(exp))
    never = StubServer(knee_rps=1.0)
    run_capacity(results, exp, StubMeasure({("poll", 0): never, ("poll", 1000): never}))
    first, second = capacity.searches(results.data)
    assert first["capacity_rps"] is None and second["capacity_rps"] is None
    floor = capacity.min_rate(SPEC)
    assert second["start_rps"] == floor
    assert [s["offered_rps"] for s in second["steps"]] == [floor]  # one step, not a descent


def test_interrupted_search_resumes_without_measuring_a_step_twice(tmp_path: Path) -> None:
    exp = experiment(impls=("poll",), idle=(1000,))
    servers = knees(("poll",), (1000,))
    uninterrupted = search(SPEC, SPEC.start_rps, lambda r: servers[("poll", 1000)].at(r))
    results = empty_results(tmp_path / "run", plan_with(exp))
    stub = StubMeasure(servers)

    def interrupted(point: object, repeat: int) -> Step:
        if len(stub.calls) == 3:
            raise KeyboardInterrupt
        return stub(point, repeat)  # type: ignore[arg-type]

    with pytest.raises(KeyboardInterrupt):
        run_capacity(results, exp, interrupted)
    stored = json.loads(results.path.read_text())["capacity"][0]
    assert stored["status"] == "pending" and len(stored["steps"]) == 3

    reloaded = type(results).load(results.run_dir)
    resumed = StubMeasure(servers)
    run_capacity(reloaded, exp, resumed)
    record = capacity.searches(reloaded.data)[0]
    assert record["status"] == "done"
    assert [Step.from_json(s) for s in record["steps"]] == uninterrupted
    assert [p.rate_rps for p in resumed.calls] == [s.offered_rps for s in uninterrupted[3:]]


def test_a_failed_step_fails_the_search_and_keeps_its_steps(tmp_path: Path) -> None:
    exp = experiment(impls=("poll",), idle=(0,))
    results = empty_results(tmp_path / "run", plan_with(exp))
    stub = StubMeasure(knees(("poll",), (0,)))

    def failing(point: object, repeat: int) -> Step:
        if len(stub.calls) == 2:
            raise PointFailed("server did not start: boom")
        return stub(point, repeat)  # type: ignore[arg-type]

    run_capacity(results, exp, failing)
    record = capacity.searches(results.data)[0]
    assert record["status"] == "failed" and len(record["steps"]) == 2
    assert record["reason"] == "at 16,000 req/s: server did not start: boom"
    # Resumed, it continues from its last step: the failed rate first, nothing repeated.
    resumed = StubMeasure(knees(("poll",), (0,)))
    run_capacity(results, exp, resumed)
    assert record["status"] == "done" and record["reason"] is None
    assert resumed.calls[0].rate_rps == 16_000.0
    rates = [s["offered_rps"] for s in record["steps"]]
    assert rates[:3] == [4000.0, 8000.0, 16000.0] and len(set(rates)) == len(rates)


def test_summary_prints_capacity_per_cold_count_and_the_ratio_with_an_interval(
    tmp_path: Path,
) -> None:
    exp = experiment(impls=("poll", "epoll-lt"), idle=(0, 10_000))
    exp = replace(exp, open_loop=replace(SPEC, repeats=3))
    results = empty_results(tmp_path / "run", plan_with(exp))
    run_capacity(results, exp, StubMeasure(knees(exp.impls, exp.idle)))
    assert len(capacity.searches(results.data)) == 2 * 2 * 3
    text = "\n".join(capacity.format_capacity(results.data))
    poll = capacity.capacities(results.data, "poll", 10_000)
    epoll = capacity.capacities(results.data, "epoll-lt", 10_000)
    assert len(poll) == len(epoll) == 3
    assert "0 cold" in text and "10,000 cold" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("poll "))
    assert f"{poll[0]:,.0f}" in row
    ratio = capacity.capacity_ratio(results.data, "poll", "epoll-lt", 10_000)
    assert ratio is not None and ratio.interval is not None
    assert ratio.value == pytest.approx(poll[0] / epoll[0])
    assert f"poll/epoll-lt at 10,000 cold: {ratio_text(ratio)}" in text
    assert "[" in ratio_text(ratio)


# -- one step: what the load generator's file says ------------------------------------


def run_result(rate: float) -> RunResult:
    return RunResult(
        repeat=2,
        started_at="2026-01-01T00:00:00+00:00",
        loadgen_status=3,
        loadgen_json="loadgen/x.json",
        window_s=1.0,
        requests_ok=900,
        requests_total=1000,
        errors={},
        latency_us={},
        client_cpu=(0.5,),
        client_bound=False,
        server_cpu_s=0.9,
        server_delta={},
        server_replies_window=900,
        server_replies_total=1000,
        idle_open_at_end=0,
        metrics={"server_cpu_util": 0.9, "cpu_us_per_request": 1000.0},
    )


def test_a_step_reads_the_open_loop_fields_of_schema_2() -> None:
    point = experiment().loads()[0]
    point = replace(point, rate_rps=1000.0)
    load = {
        "schema_version": 2,
        "rps": 1.0,  # must not be used: achieved comes from open_loop
        "errors": {"timeout": 2},
        "latency_us": {"p50": 51.5, "p90": 70.0, "p99": 1200.25, "p99_9": 4000.0, "max": 9000.0},
        "open_loop": {
            "offered_rps": 1000.0,
            "sent_rps": 990.0,
            "achieved_rps": 900.0,
            "due": 1000,
            "sent": 990,
            "answered": 900,
            "late": 98,
            "refused": 2,
        },
        "overloaded": True,
        "client_bound": True,
    }
    got = step_from_load(point, run_result(1000.0), load)
    assert (got.offered_rps, got.sent_rps, got.achieved_rps) == (1000.0, 990.0, 900.0)
    assert (got.p50_us, got.p99_us, got.p999_us) == (51.5, 1200.25, 4000.0)
    assert (got.late, got.refused, got.errors) == (98, 2, 2)
    assert got.overloaded and got.client_bound and got.loadgen_status == 3 and got.repeat == 2


def test_a_step_reads_a_schema_1_file_as_offered_and_rps() -> None:
    point = replace(experiment().loads()[0], rate_rps=2000.0)
    load = {
        "rps": 1995.0,
        "errors": {},
        "latency_us": {"p50": 50, "p90": 60, "p99": 100, "p99_9": 200, "max": 300},
    }
    got = step_from_load(point, run_result(2000.0), load)
    assert (got.offered_rps, got.achieved_rps, got.sent_rps) == (2000.0, 1995.0, None)
    assert not got.overloaded and got.late is None


def test_an_open_loop_point_passes_its_rate_to_the_load_generator(tmp_path: Path) -> None:
    from benchmarks.sweep import SweepConfig

    point = replace(experiment().loads()[0], rate_rps=12_345.0)
    assert point.key.endswith("/r12345")
    closed = experiment().loads()[0]
    assert "/r" not in closed.key.split("/p1")[1]
    config = SweepConfig(run_dir=tmp_path, server_cpu=0, client_cpus=(1,), loadgen=("lg",))
    load = load_config(point, plan_with(experiment()), config, "127.0.0.1", 1)
    assert load.rate_rps == 12_345.0 and load.open_loop
    load = load_config(closed, plan_with(experiment()), config, "127.0.0.1", 1)
    assert load.rate_rps is None and not load.open_loop


# -- through the sweep: real servers, a stub load generator with a known knee ----------

SWEEP_PLAN = """\
[[experiments]]
name = "capacity"
kind = "capacity"
impls = ["epoll-lt", "select"]
connections = [20]
idle = [0, 1010]

[experiments.open_loop]
start_rps = 4000
factor = 2
precision = 0.1
max_steps = 8
window_s = 0.5
warmup_s = 0

[[experiments]]
name = "latency"
kind = "latency"
impls = ["epoll-lt"]
connections = [1, 10]

[experiments.open_loop]
window_s = 0.5
warmup_s = 0
"""


def test_capacity_and_latency_through_the_sweep_with_a_stub_load_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    plan = tmp_path / "plan.toml"
    plan.write_text(SWEEP_PLAN)
    stub = Path(__file__).resolve().parent / "stub_knee_loadgen.py"
    knee = 10_000.0
    monkeypatch.setenv("MUXLAB_STUB_KNEE_RPS", str(knee))
    options = ["--config", str(plan), "--out-dir", str(tmp_path), "--run-id", "r", "--quiet"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "muxlab",
            "sweep",
            *options,
            "--loadgen",
            f"{sys.executable} {stub}",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "r"
    data = json.loads((run_dir / "results.json").read_text())
    by_cell = {(s["spec"]["impl"], s["spec"]["idle"]): s for s in data["capacity"]}
    assert by_cell[("select", 1010)]["status"] == "skipped"
    for cold in (0, 1010):
        record = by_cell[("epoll-lt", cold)]
        assert record["status"] == "done"
        found = record["capacity_rps"]
        assert knee / 1.1 <= found <= knee
        for saved in record["steps"]:
            load = json.loads((run_dir / saved["loadgen_json"]).read_text())
            assert load["open_loop"]["offered_rps"] == saved["offered_rps"]
            assert saved["loadgen_status"] == (3 if saved["overloaded"] else 0)
        assert any(s["overloaded"] for s in record["steps"])  # overload is kept as data
    lowest = min(s["capacity_rps"] for s in data["capacity"] if s["capacity_rps"])
    rates = {r["spec"]["rate_rps"] for r in data["latency"]}
    assert rates == {capacity.round_rate(0.5 * lowest)}
    assert [r["status"] for r in data["latency"]] == ["done", "done"]
    assert f"{by_cell[('epoll-lt', 0)]['capacity_rps']:,.0f}" in proc.stdout
    assert "capacity, open loop" in proc.stdout and "fixed-rate latency" in proc.stdout
    charts = {p.name for p in (run_dir / "charts").iterdir()}
    assert {"capacity.png", "capacity.svg", "latency.png", "latency.svg"} <= charts
