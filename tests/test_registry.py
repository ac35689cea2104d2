"""The implementation registry: one entry puts a backend in every plan, ratio and chart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from benchmarks import capacity, latency
from benchmarks.experiments import OPEN_LOOP_KINDS, preset
from benchmarks.plot import plot_results
from benchmarks.report import render
from benchmarks.results import ResultsFile
from benchmarks.summary import format_report
from muxlab.errors import UsageError
from muxlab.goals import Goal
from servers import registry
from servers.backends import BACKENDS
from servers.backends.epoll_backend import EpollBackend
from servers.peers import PYTHON_PEERS
from servers.registry import Implementation, Style, SweepRoles, backend_class_entry
from tests.conftest import python_peer_names, readiness_names, served_names
from tests.open_loop_stubs import StubMeasure, StubServer, empty_results
from tests.test_plot import fake_run


class ThrowawayBackend(EpollBackend):
    """epoll-lt under another name: the thinnest backend a registry entry can add."""

    name = "epoll-throwaway"


NAME = ThrowawayBackend.name
COLOUR = "magenta"  # no built-in entry has it
EVERY_ROLE = SweepRoles(
    grid=True,
    ltet=True,
    peers_echo=True,
    peers_http=True,
    quick=True,
    idle_ratio=True,
    idle_goal=Goal(">=", 0.9),
    cpu_subject=True,
    capacity_side="ready",
)


@pytest.fixture
def throwaway() -> Iterator[Implementation]:
    with registry.registered(
        backend_class_entry(ThrowawayBackend, Style(COLOUR, "d"), EVERY_ROLE)
    ) as entry:
        yield entry
    assert registry.find(NAME) is None  # gone again for every other test


def synthetic_quick_run(run_dir: Path) -> ResultsFile:
    """The quick preset's plan with every point measured by a stub, nothing started."""
    plan = preset("quick")
    results = empty_results(run_dir, plan)
    for point in plan.points():
        reason = point.skip_reason()
        if reason is not None:
            results.mark(point.key, "skipped", reason)
            continue
        for repeat in (1, 2):
            results.add_run(point.key, fake_run(point, repeat, 10000.0 + repeat))
    for experiment in plan.experiments:
        if experiment.kind not in OPEN_LOOP_KINDS:
            continue
        servers = {
            (impl, idle): StubServer(30_000.0)
            for impl in experiment.impls
            for idle in experiment.idle
        }
        runner = capacity.run_capacity if experiment.kind == "capacity" else latency.run_latency
        runner(results, experiment, StubMeasure(servers))
    return results


def test_a_registered_backend_is_in_every_experiment_of_the_quick_preset(
    throwaway: Implementation,
) -> None:
    plan = preset("quick")
    assert {e.name for e in plan.experiments if NAME not in e.impls} == set()
    mine = [p for p in plan.points() if p.impl == NAME]
    grid = {e.name for e in plan.experiments if e.kind not in OPEN_LOOP_KINDS}
    assert {name for p in mine for name in plan.experiments_of(p)} == grid
    assert all(p.skip_reason() is None for p in mine)  # no descriptor ceiling: none skipped
    assert ("poll", NAME) in capacity.ratio_pairs()


def test_a_registered_backend_is_in_the_test_fixtures(throwaway: Implementation) -> None:
    assert NAME in served_names()
    assert NAME in readiness_names()
    assert NAME not in python_peer_names()


def test_a_registered_backend_is_in_every_ratio_and_chart_of_a_quick_run(
    throwaway: Implementation, tmp_path: Path
) -> None:
    data = synthetic_quick_run(tmp_path / "run").data
    summary = format_report(data).splitlines()
    ratio_a = summary[summary.index(next(s for s in summary if s.startswith("(a)"))) + 1 :]
    assert any(line.strip().startswith(f"{NAME} ") and "goal >= 0.9" in line for line in ratio_a)
    assert any(f"{NAME} " in line and "vs asyncio-protocol" in line for line in summary)
    assert any(line.strip().startswith(NAME) for line in capacity.format_capacity(data))
    readme = render(data, tmp_path / "run", tmp_path)
    assert f"| {NAME} |" in readme  # ratio (a) table and capacity table
    assert f"| {NAME} / asyncio-protocol |" in readme  # ratios (b) and (c)
    charts = plot_results(data, tmp_path / "charts")
    drawn = {p.stem for p in charts if p.suffix == ".svg"}
    assert drawn == {e["name"] for e in data["plan"]["experiments"]}
    for path in (p for p in charts if p.suffix == ".svg"):
        svg = path.read_text()
        # matplotlib writes each label as a comment beside its glyphs, colours as hex.
        assert NAME in svg, path.name
        assert to_hex(COLOUR) in svg, path.name


def test_every_backend_of_the_backend_registry_has_one_entry() -> None:
    for name, cls in BACKENDS.items():
        entry = registry.get(name)
        assert entry.kind in ("readiness backend", "completion loop")
        assert entry.fd_ceiling == cls.fd_ceiling
        assert entry.edge_triggered == cls.edge_triggered
    assert set(registry.names("python peer")) == set(PYTHON_PEERS)
    assert registry.get("select").fd_ceiling == 1024  # FD_SETSIZE: the one ceiling


def test_every_implementation_is_drawn_in_its_own_colour() -> None:
    colours = [e.style.colour for e in registry.entries()]
    assert len(set(colours)) == len(colours)
    assert "black" not in colours  # the colour of a name no entry knows


def test_a_name_or_colour_taken_is_refused(throwaway: Implementation) -> None:
    with pytest.raises(ValueError, match="registered already"):
        registry.register(throwaway)
    taken = backend_class_entry(EpollBackend, registry.get("poll").style, SweepRoles())
    other = Implementation(**{**taken.__dict__, "name": "another"})
    with pytest.raises(ValueError, match="is poll's"):
        registry.register(other)
    assert registry.find("another") is None


def test_an_unknown_name_is_a_usage_error_naming_the_choices() -> None:
    with pytest.raises(UsageError, match=r"unknown implementation 'kqueue' \(choose from select,"):
        registry.get("kqueue")


def test_an_implementation_is_offered_only_the_protocols_it_speaks() -> None:
    nginx = registry.get("nginx")
    assert nginx.protocols == ("http",)
    assert nginx.unavailable_reason("echo") == "nginx is compared on HTTP only"
    points = [p for e in preset("default").experiments for p in e.points()]
    assert {p.protocol for p in points if p.impl == "nginx"} == {"http"}


def test_the_ceiling_reason_names_the_ceiling_and_its_man_page() -> None:
    select = registry.get("select")
    assert select.ceiling_reason(1008, 16) is None  # 1008 + 16 = 1024 descriptors fit
    assert select.ceiling_reason(1009, 16) == (
        "select: 1009 connections + 16 reserved descriptors pass its descriptor ceiling of "
        "1024 (FD_SETSIZE, select(2))"
    )
    assert registry.get("poll").ceiling_reason(1_000_000, 16) is None
