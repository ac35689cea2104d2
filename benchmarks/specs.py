"""The types of a sweep plan: experiment kinds, points, specs and the plan, and their JSON.

An experiment is a grid (implementations x protocols x active connections x idle
connections x message sizes); its ``kind`` says which chart set draws it. A point is one
cell of a grid; two experiments that name the same cell share one measurement, so the
idle experiment's 0-idle point is the active experiment's 10-connection point.

The presets that fill these types are in :mod:`benchmarks.presets`; TOML plans and the
command line's overrides in :mod:`benchmarks.plan_input`; :mod:`benchmarks.experiments`
gathers all three under one import.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

from muxlab.fdbudget import SELECT_RESERVE
from servers import registry
from servers.loop import EtDrain

ExperimentKind = Literal["active", "idle", "ltet", "peers", "capacity", "latency", "herd", "cores"]
EXPERIMENT_KINDS: tuple[ExperimentKind, ...] = get_args(ExperimentKind)
# Open-loop kinds have no fixed grid of rates: a capacity search picks each offered rate
# from the steps before it, and the latency experiment takes its rate from the capacity
# results of the same run. benchmarks/open_loop.py measures them after the grid points.
OPEN_LOOP_KINDS: frozenset[ExperimentKind] = frozenset({"capacity", "latency"})
# Kinds against worker count (muxlab serve --workers N): no grid of loads either;
# benchmarks/herd.py measures them after the open-loop kinds.
SCALING_KINDS: frozenset[ExperimentKind] = frozenset({"herd", "cores"})
PresetName = Literal["quick", "default", "full"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)

# The headline ratios (b) and (c) compare CPU per request at these points (README,
# "Claims"; benchmarks/summary.py).
RATIO_CONNECTIONS = (100, 1000)
RATIO_MSG_BYTES = 1024
IDLE_ACTIVE_CONNECTIONS = 10


@dataclass(frozen=True, order=True)
class PointSpec:
    """One measurement: a server implementation under one load."""

    impl: str
    protocol: str
    connections: int
    idle: int
    msg_bytes: int  # echo payload per request; 0 for HTTP (fixed request and reply)
    pipeline: int
    rate_rps: float | None = None  # open loop at this total offered rate; None: closed loop
    # epoll-et's --et-drain when not the default (servers/loop.py); None: strict.
    et_drain: EtDrain | None = None

    @property
    def key(self) -> str:
        rate = "" if self.rate_rps is None else f"/r{self.rate_rps:g}"
        drain = "" if self.et_drain is None else f"/{self.et_drain}"
        return (
            f"{self.impl}/{self.protocol}/c{self.connections}/i{self.idle}"
            f"/s{self.msg_bytes}/p{self.pipeline}{rate}{drain}"
        )

    @property
    def label(self) -> str:
        """The implementation as charts name it: ``epoll-et short-read`` for a variant."""
        return self.impl if self.et_drain is None else f"{self.impl} {self.et_drain}"

    def server_args(self) -> tuple[str, ...]:
        """``muxlab serve`` options this point adds to its implementation's defaults."""
        return () if self.et_drain is None else ("--et-drain", self.et_drain)

    @property
    def total_connections(self) -> int:
        return self.connections + self.idle

    def skip_reason(self) -> str | None:
        """Why this point cannot be measured by design (not by accident of this machine)."""
        return ceiling_reason(self.impl, self.total_connections)


@dataclass(frozen=True)
class OpenLoopSpec:
    """How the open-loop kinds measure (``capacity``: the search; ``latency``: the rate).

    A capacity search steps the offered rate from ``start_rps`` by ``factor`` until a step
    is no longer good (achieved < 99% of offered, or p99 > ``slo_ms``), then bisects
    between the highest good and lowest bad rate until they are within ``precision`` of
    each other, then measures ``overload_steps`` more rates past the knee; never more than
    ``max_steps`` steps (benchmarks/capacity.py). The latency experiment offers
    ``rate_rps``, or, when ``None``, a fraction of the lowest capacity found in the same
    run, or a default (benchmarks/latency.py).
    """

    slo_ms: float = 5.0
    start_rps: float = 4000.0
    factor: float = 2.0
    precision: float = 0.05
    max_steps: int = 12
    overload_steps: int = 1
    window_s: float = 1.0
    warmup_s: float = 0.5
    repeats: int = 1
    rate_rps: float | None = None


@dataclass(frozen=True)
class ScalingSpec:
    """How ``herd`` and ``cores`` measure (benchmarks/herd.py). ``herd``: per backend,
    balance and worker count, connections opened and reset in bursts for ``window_s``
    (at most ``max_connects``). ``cores``: per backend and worker count, the load
    generator's closed loop for ``window_s`` after ``warmup_s``."""

    workers: tuple[int, ...] = (1, 2, 4)
    balances: tuple[str, ...] = ("shared", "exclusive", "reuseport")
    window_s: float = 1.0
    warmup_s: float = 0.3
    max_connects: int = 4000


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    kind: ExperimentKind
    impls: tuple[str, ...]
    protocols: tuple[str, ...] = ("echo",)
    connections: tuple[int, ...] = (IDLE_ACTIVE_CONNECTIONS,)
    idle: tuple[int, ...] = (0,)
    msg_bytes: tuple[int, ...] = (RATIO_MSG_BYTES,)
    pipeline: int = 1
    # Repeats of this experiment's points; None: the plan's. Headline experiments ask for
    # more than the rest (docs/sweep.md, "How many repeats").
    repeats: int | None = None
    open_loop: OpenLoopSpec | None = None  # the open-loop kinds only
    scaling: ScalingSpec | None = None  # the scaling kinds only
    # epoll-et's drain rules to measure, each its own point ("strict" is the plain point);
    # () measures the default only. Implementations without the option ignore it.
    et_drains: tuple[EtDrain, ...] = ()

    def points(self) -> list[PointSpec]:
        """The grid's points; none for an open-loop or scaling kind."""
        return [] if self.kind in OPEN_LOOP_KINDS | SCALING_KINDS else self.loads()

    def loads(self) -> list[PointSpec]:
        """Every cell of the grid, without a rate."""
        points: list[PointSpec] = []
        for impl, protocol, conns, idle, size in itertools.product(
            self.impls, self.protocols, self.connections, self.idle, self.msg_bytes
        ):
            if protocol not in registry.get(impl).protocols:
                continue  # only the protocols it speaks (nginx: HTTP only)
            point = PointSpec(
                impl, protocol, conns, idle, size if protocol == "echo" else 0, self.pipeline
            )
            for variant in self._drain_variants(point):
                if variant not in points:
                    points.append(variant)
        return points

    def _drain_variants(self, point: PointSpec) -> list[PointSpec]:
        if not self.et_drains or not registry.takes_et_drain(point.impl):
            return [point]
        return [
            replace(point, et_drain=None if drain == "strict" else drain)
            for drain in self.et_drains
        ]


@dataclass(frozen=True)
class SweepPlan:
    experiments: tuple[ExperimentSpec, ...]
    repeats: int
    duration_s: float
    warmup_s: float
    preset: str | None = None
    source: str | None = None  # the TOML file, when there was one
    # Extra attempts of a repeat slot whose run was invalid (benchmarks.validity).
    retries: int = 2

    def points(self) -> list[PointSpec]:
        """Every distinct point, in experiment order; shared points appear once."""
        seen: dict[PointSpec, None] = {}
        for experiment in self.experiments:
            for point in experiment.points():
                seen.setdefault(point)
        return list(seen)

    def experiments_of(self, point: PointSpec) -> list[str]:
        return [e.name for e in self.experiments if point in e.points()]

    def kinds_of(self, point: PointSpec) -> list[str]:
        return sorted({e.kind for e in self.experiments if point in e.points()})

    def repeats_of(self, point: PointSpec) -> int:
        """The most repeats any experiment holding this point asks for."""
        return max(
            (e.repeats or self.repeats for e in self.experiments if point in e.points()),
            default=self.repeats,
        )


@dataclass(frozen=True)
class PlanOverrides:
    """Command-line flags laid over a preset or a TOML plan; ``None`` keeps the plan's."""

    experiments: tuple[str, ...] | None = None
    impls: tuple[str, ...] | None = None
    connections: tuple[int, ...] | None = None
    idle: tuple[int, ...] | None = None
    msg_bytes: tuple[int, ...] | None = None
    repeats: int | None = None
    duration_s: float | None = None
    warmup_s: float | None = None
    retries: int | None = None


def ceiling_reason(impl: str, connections: int) -> str | None:
    """Why ``impl`` cannot hold ``connections`` beside :data:`SELECT_RESERVE` descriptors of
    its own (its registry entry's ``fd_ceiling``), or ``None`` when it can."""
    entry = registry.find(impl)
    return None if entry is None else entry.ceiling_reason(connections, SELECT_RESERVE)


def impl_names() -> tuple[str, ...]:
    """Every name an experiment may measure: the registry's, now."""
    return registry.names()


def plan_to_json(plan: SweepPlan) -> dict[str, Any]:
    return {
        "preset": plan.preset,
        "source": plan.source,
        "repeats": plan.repeats,
        "retries": plan.retries,
        "duration_s": plan.duration_s,
        "warmup_s": plan.warmup_s,
        "experiments": [asdict(e) for e in plan.experiments],
    }


def plan_from_json(data: dict[str, Any]) -> SweepPlan:
    experiments = tuple(
        ExperimentSpec(
            name=e["name"],
            kind=e["kind"],
            impls=tuple(e["impls"]),
            protocols=tuple(e["protocols"]),
            connections=tuple(e["connections"]),
            idle=tuple(e["idle"]),
            msg_bytes=tuple(e["msg_bytes"]),
            pipeline=e["pipeline"],
            repeats=e.get("repeats"),
            open_loop=OpenLoopSpec(**e["open_loop"]) if e.get("open_loop") else None,
            scaling=scaling_from_json(e["scaling"]) if e.get("scaling") else None,
            et_drains=tuple(e.get("et_drains", ())),
        )
        for e in data["experiments"]
    )
    return SweepPlan(
        experiments,
        data["repeats"],
        data["duration_s"],
        data["warmup_s"],
        data.get("preset"),
        data.get("source"),
        data.get("retries", 0),
    )


def scaling_from_json(data: dict[str, Any]) -> ScalingSpec:
    return ScalingSpec(
        **{**data, "workers": tuple(data["workers"]), "balances": tuple(data["balances"])}
    )
