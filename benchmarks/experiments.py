"""What a sweep measures: declarative experiment specs, the presets, and TOML plans.

An experiment is a grid (implementations x protocols x active connections x idle
connections x message sizes); its ``kind`` says which chart set draws it. A point is one
cell of a grid; two experiments that name the same cell share one measurement, so the
idle experiment's 0-idle point is the active experiment's 10-connection point.

Descriptor budget: the server holds one descriptor per connection (active or idle) plus a
few of its own, and so does the load generator, in its own process; both run under the
same ``RLIMIT_NOFILE`` (the run's environment records it). ``full`` therefore stops at
the limit minus both ends' reserves (:func:`muxlab.fdbudget.sweep_connection_budget`), and
a mechanism with a descriptor ceiling (select's ``FD_SETSIZE``) stops where its
descriptors would reach it (:data:`muxlab.fdbudget.SELECT_RESERVE`).

Which implementations each experiment measures comes from the implementation registry
(:mod:`servers.registry`), read when a preset is built, so a newly registered backend is
in every experiment its roles name.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from benchmarks.names import check_safe_name
from muxlab.errors import UsageError
from muxlab.fdbudget import SELECT_RESERVE, sweep_connection_budget
from servers import registry
from servers.loop import ET_DRAINS, EtDrain, takes_et_drain
from servers.protocols import PROTOCOL_NAMES

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
        if not self.et_drains or not takes_et_drain(point.impl):
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


def _preset_experiments(
    active: tuple[int, ...],
    idle: tuple[int, ...],
    ltet_sizes: tuple[int, ...],
    ltet_connections: tuple[int, ...],
    peer_connections: tuple[int, ...],
    quick: bool,
    headline_repeats: int | None = None,
) -> tuple[ExperimentSpec, ...]:
    """The five experiments; ``headline_repeats`` for the two whose points the headline
    ratios read (idle: ratio (a); peers: ratios (b) and (c)). ``quick`` keeps only the
    registry's quick implementations in peers-http."""
    grid = registry.where(lambda r: r.grid)
    http = registry.where(lambda r: r.peers_http and (r.quick or not quick))
    return (
        ExperimentSpec("active", "active", grid, connections=active),
        ExperimentSpec("idle", "idle", grid, idle=idle, repeats=headline_repeats),
        ExperimentSpec(
            "ltet",
            "ltet",
            registry.where(lambda r: r.ltet),
            connections=ltet_connections,
            msg_bytes=ltet_sizes,
            et_drains=ET_DRAINS,
        ),
        ExperimentSpec(
            "peers",
            "peers",
            registry.where(lambda r: r.peers_echo),
            connections=peer_connections,
            repeats=headline_repeats,
        ),
        ExperimentSpec(
            "peers-http", "peers", http, protocols=("http",), connections=peer_connections
        ),
    )


# Hot connections of the capacity experiment: few, as in Banga and Mogul's hot/cold method,
# yet enough that one request in flight per connection does not cap the offered rate
# (Little's law: 20 connections / 50 us per round trip = 400,000 req/s).
CAPACITY_HOT_CONNECTIONS = 20
# The latency experiment's connections beside idle ones, as in the idle experiment.
LATENCY_ACTIVE_CONNECTIONS = IDLE_ACTIVE_CONNECTIONS


def open_loop_experiments(name: str) -> tuple[ExperimentSpec, ...]:
    """The capacity and latency experiments of a preset (benchmarks/open_loop.py)."""
    if name == "quick":
        # Draws both chart kinds and stays small: one cold count, two backends, three
        # steps of 0.5 s; about 10 runs of ~2.2 s each (0.2 s warm-up, 0.5 s window,
        # ~1.5 s to start and reap two interpreters), ~25 s on 2 cores.
        spec = OpenLoopSpec(
            start_rps=10000.0,
            factor=4.0,
            precision=0.5,
            max_steps=3,
            overload_steps=0,
            window_s=0.5,
            warmup_s=0.2,
        )
        impls = registry.where(lambda r: r.grid and r.quick)
        return (
            ExperimentSpec(
                "capacity",
                "capacity",
                impls,
                connections=(CAPACITY_HOT_CONNECTIONS,),
                idle=(1000,),
                open_loop=spec,
            ),
            ExperimentSpec("latency", "latency", impls, connections=(1, 100), open_loop=spec),
        )
    # default and full. Estimate for default on 2 cores, ~6 min: 16 searches (six backends
    # at three cold counts; select only at 0 cold: 20 + 1,000 + 16 descriptors pass
    # FD_SETSIZE) of 5-8 steps of ~2.6 s (0.3 s warm-up, 0.8 s window, ~1.5 s of process
    # start and reaping), plus 2 s of connecting per step at 10,000 cold: ~4.5 min; then
    # the two latency experiments, 30 runs with 1.5 s windows (1,500 samples at 1,000
    # req/s, 15 beyond the p99): ~1.5 min. full uses 2 s (capacity) and 4 s (latency)
    # windows, more points and 3 repeats.
    long = name == "full"
    grid = registry.where(lambda r: r.grid)
    spec = OpenLoopSpec(
        start_rps=8000.0,
        factor=2.0,
        precision=0.15,
        max_steps=8,
        overload_steps=1,
        window_s=2.0 if long else 0.8,
        warmup_s=0.5 if long else 0.3,
        repeats=3 if long else 1,
    )
    fixed_rate = replace(spec, window_s=4.0 if long else 1.5)
    return (
        ExperimentSpec(
            "capacity",
            "capacity",
            grid,
            connections=(CAPACITY_HOT_CONNECTIONS,),
            idle=(0, 1000, 10000),
            open_loop=spec,
        ),
        ExperimentSpec(
            "latency",
            "latency",
            grid,
            connections=(1, 100, 1000, 10000) if long else (1, 100, 10000),
            open_loop=fixed_rate,
        ),
        ExperimentSpec(
            "latency-idle",
            "latency",
            grid,
            connections=(LATENCY_ACTIVE_CONNECTIONS,),
            idle=(0, 1000, 10000) if long else (0, 10000),
            open_loop=fixed_rate,
        ),
    )


def preset(name: str) -> SweepPlan:
    """A named plan: its grid experiments, then its open-loop ones. Budgets are for 2
    CPUs, from ``muxlab sweep``'s own estimate: per run, warm-up + window + ~1.5 s (two
    interpreters start, connect, reap), plus 0.2 ms per connection for the ramp; retries
    of invalid repeats come on top."""
    plan = grid_preset(name)
    extra = open_loop_experiments(name) + scaling_experiments(name)
    return replace(plan, experiments=plan.experiments + extra)


def scaling_experiments(name: str) -> tuple[ExperimentSpec, ...]:
    """herd and cores in default and full, with short windows: a herd cell starts a
    server of up to 4 workers (one interpreter each) for a 0.3 s warm-up and a 0.5 s
    window; default's 15 herd cells (3 exclusive-on-poll cells are skipped) took 2.5 min
    on 2 CPUs beside other jobs (docs/sweep.md)."""
    if name == "quick":
        return ()
    long = name == "full"
    window_s = 2.0 if long else 0.5
    herd = ScalingSpec(workers=(1, 2, 4, 8) if long else (1, 2, 4), window_s=window_s)
    cores = ScalingSpec(workers=(1, 2, 4) if long else (1, 2), window_s=2 * window_s)
    return (
        ExperimentSpec("herd", "herd", registry.where(lambda r: r.herd), scaling=herd),
        ExperimentSpec(
            "cores",
            "cores",
            registry.where(lambda r: r.cores),
            connections=(CAPACITY_HOT_CONNECTIONS,),
            scaling=cores,
        ),
    )


def grid_preset(name: str) -> SweepPlan:
    if name == "quick":
        # <= 2 min on 2 cores (37 points, ltet's two epoll-et short-read ones included;
        # 37 runs of 0.9 s, about 1.5 min by the estimate; 50 s on a quiet machine when it
        # had 31): every chart drawn, every ratio with a 100-connection point printed. One
        # repeat: no intervals, so every verdict is "undecided"; the statistics are tested
        # on synthetic samples instead.
        return SweepPlan(
            _preset_experiments(
                active=(1, 100),
                idle=(0, 2000),
                ltet_sizes=(64, 65536),
                ltet_connections=(10,),
                peer_connections=(100,),
                quick=True,
            ),
            repeats=1,
            duration_s=0.6,
            warmup_s=0.3,
            preset=name,
        )
    if name == "default":
        # The grid's share of a ~20 min budget on 2 cores (the capacity and latency
        # experiments add theirs): 1 s windows after a 0.5 s warm-up. Measured here
        # (docs/sweep.md, "Window and repeats"): a longer window did not narrow the typical
        # spread, outliers from other jobs dominate it, so the budget buys repeats: 5 for
        # the headline points (idle: ratio (a); peers: ratios (b) and (c)), 3 elsewhere,
        # interleaved. With six backends the grid is cut to the points the claims need:
        # active 1..10,000 without 10, idle 0, 500 (select still fits) and 10,000.
        return SweepPlan(
            _preset_experiments(
                active=(1, 100, 1000, 10000),
                idle=(0, 500, 10000),
                ltet_sizes=(64, 1024, 16384, 1 << 20),
                ltet_connections=(100,),
                peer_connections=RATIO_CONNECTIONS,
                quick=False,
                headline_repeats=5,
            ),
            repeats=3,
            duration_s=1.0,
            warmup_s=0.5,
            preset=name,
        )
    if name == "full":
        # Over an hour: log grids to the descriptor budget, 5 repeats of 3 s, 9 for the
        # headline experiments.
        top = sweep_connection_budget()
        active = (*(n for n in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if n < top), top)
        idle_top = top - IDLE_ACTIVE_CONNECTIONS
        idle = tuple(n for n in (0, 10, 100, 300, 500, 1000, 3000, 10000) if n < idle_top)
        return SweepPlan(
            _preset_experiments(
                active=active,
                idle=(*idle, idle_top),
                ltet_sizes=(64, 256, 1024, 4096, 16384, 65536, 262144, 1 << 20),
                ltet_connections=(1, 10, 100, 1000),
                peer_connections=(10, 100, 1000, 10000),
                quick=False,
                headline_repeats=9,
            ),
            repeats=5,
            duration_s=3.0,
            warmup_s=1.0,
            preset=name,
        )
    raise UsageError(f"unknown preset {name!r} (choose from {', '.join(PRESET_NAMES)})")


# -- TOML ------------------------------------------------------------------------------

_TOP_KEYS = {"preset", "repeats", "retries", "duration_s", "warmup_s", "experiments"}
_EXPERIMENT_KEYS = {f.name for f in fields(ExperimentSpec)}


def load_toml(path: Path) -> SweepPlan:
    """A plan from a TOML file: an optional ``preset`` base, timing, ``[[experiments]]``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    base = preset(str(data.get("preset", "quick")))
    experiments = base.experiments
    if "experiments" in data:
        if not isinstance(data["experiments"], list) or not data["experiments"]:
            raise UsageError(f"{path}: 'experiments' must be a non-empty array of tables")
        experiments = tuple(_experiment_from_toml(path, e) for e in data["experiments"])
    plan = replace(
        base,
        experiments=experiments,
        source=str(path),
        preset=base.preset if "preset" in data else None,
    )
    return replace(
        plan,
        repeats=_number(path, data, "repeats", plan.repeats, int),
        retries=_number(path, data, "retries", plan.retries, int),
        duration_s=_number(path, data, "duration_s", plan.duration_s, float),
        warmup_s=_number(path, data, "warmup_s", plan.warmup_s, float),
    )


def _number(path: Path, data: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{path}: {key} must be a number")
    if kind is int and not isinstance(value, int):
        raise UsageError(f"{path}: {key} must be an integer")
    return kind(value)


def _experiment_from_toml(path: Path, table: Any) -> ExperimentSpec:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: each [[experiments]] entry must be a table")
    unknown = set(table) - _EXPERIMENT_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown experiment key(s) {', '.join(sorted(unknown))}")
    if "name" not in table:
        raise UsageError(f"{path}: every experiment needs a name")
    name = check_safe_name("experiment name", str(table["name"]))
    kind = table.get("kind", name)
    if kind not in EXPERIMENT_KINDS:
        kinds = ", ".join(EXPERIMENT_KINDS)
        raise UsageError(f"{path}: experiment {name!r}: kind {kind!r} is not one of {kinds}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    for key in ("impls", "protocols"):
        if key in table:
            values[key] = _strings(path, name, key, table[key])
    for key in ("connections", "idle", "msg_bytes"):
        if key in table:
            values[key] = _ints(path, name, key, table[key])
    for key in ("pipeline", "repeats"):
        if key in table:
            values[key] = _ints(path, name, key, [table[key]])[0]
    if "et_drains" in table:
        values["et_drains"] = _strings(path, name, "et_drains", table["et_drains"])
    if "open_loop" in table:
        values["open_loop"] = _open_loop_from_toml(path, name, table["open_loop"])
    if "impls" not in values:
        raise UsageError(f"{path}: experiment {name!r} needs impls")
    spec = ExperimentSpec(**values)
    validate_experiment(spec)
    return spec


def _open_loop_from_toml(path: Path, name: str, table: Any) -> OpenLoopSpec:
    where = f"{path}: experiment {name!r}: open_loop"
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    known = {f.name: f for f in fields(OpenLoopSpec)}
    unknown = set(table) - set(known)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise UsageError(f"{where}: {key} must be a number >= 0")
        values[key] = int(value) if key in ("max_steps", "repeats", "overload_steps") else value
    spec = OpenLoopSpec(**values)
    positive = (spec.slo_ms, spec.start_rps, spec.precision, spec.max_steps, spec.window_s)
    if spec.factor <= 1 or min(positive) <= 0 or spec.repeats < 1 or spec.rate_rps == 0:
        raise UsageError(
            f"{where}: need factor > 1, repeats >= 1, and slo_ms, start_rps, precision, "
            "max_steps, window_s and rate_rps > 0"
        )
    return spec


def _strings(path: Path, name: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{path}: experiment {name!r}: {key} must be a list of strings")
    return tuple(value)


def _ints(path: Path, name: str, key: str, value: Any) -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(type(v) is int for v in value)
    if not ok:
        raise UsageError(f"{path}: experiment {name!r}: {key} must be a list of integers")
    return tuple(value)


# -- checks and overrides --------------------------------------------------------------


def validate_experiment(spec: ExperimentSpec) -> None:
    for impl in spec.impls:
        registry.get(impl)  # UsageError naming the choices when it is not registered
    for protocol in spec.protocols:
        if protocol not in PROTOCOL_NAMES:
            raise UsageError(f"unknown protocol {protocol!r} (choose from echo, http)")
    if any(n < 1 for n in spec.connections):
        raise UsageError(f"experiment {spec.name!r}: active connections must be >= 1")
    if any(n < 0 for n in spec.idle):
        raise UsageError(f"experiment {spec.name!r}: idle connections must be >= 0")
    if any(n < 1 for n in spec.msg_bytes) or spec.pipeline < 1:
        raise UsageError(f"experiment {spec.name!r}: sizes and pipeline must be >= 1")
    if spec.repeats is not None and spec.repeats < 1:
        raise UsageError(f"experiment {spec.name!r}: repeats must be >= 1")
    unknown_drains = [d for d in spec.et_drains if d not in ET_DRAINS]
    if unknown_drains:
        raise UsageError(
            f"experiment {spec.name!r}: unknown et_drains {unknown_drains} "
            f"(choose from {', '.join(ET_DRAINS)})"
        )
    budget = sweep_connection_budget()
    too_many = [c + i for c in spec.connections for i in spec.idle if c + i > budget]
    if too_many:
        raise UsageError(
            f"experiment {spec.name!r}: {max(too_many)} connections need as many descriptors "
            f"in the server and in the load generator; the fd limit allows {budget} "
            "(raise it with ulimit -n)"
        )


def apply_overrides(plan: SweepPlan, flags: PlanOverrides) -> SweepPlan:
    experiments = plan.experiments
    if flags.experiments is not None:
        known = {e.name for e in experiments}
        missing = [n for n in flags.experiments if n not in known]
        if missing:
            raise UsageError(
                f"unknown experiment(s) {', '.join(missing)} (have: {', '.join(sorted(known))})"
            )
        experiments = tuple(e for e in experiments if e.name in flags.experiments)
    if flags.impls is not None:
        unknown = [n for n in flags.impls if registry.find(n) is None]
        if unknown:
            raise UsageError(
                f"unknown implementation(s) {', '.join(unknown)} "
                f"(choose from {', '.join(impl_names())})"
            )
        wanted = flags.impls
        experiments = tuple(
            replace(e, impls=tuple(i for i in e.impls if i in wanted)) for e in experiments
        )
        experiments = tuple(e for e in experiments if e.impls)
    experiments = tuple(_override_grid(e, flags) for e in experiments)
    for e in experiments:
        validate_experiment(e)
    new = replace(
        plan,
        experiments=experiments,
        repeats=plan.repeats if flags.repeats is None else flags.repeats,
        duration_s=plan.duration_s if flags.duration_s is None else flags.duration_s,
        warmup_s=plan.warmup_s if flags.warmup_s is None else flags.warmup_s,
        retries=plan.retries if flags.retries is None else flags.retries,
    )
    if flags.repeats is not None:
        # --repeats is the user's explicit count: it overrides every experiment's own.
        new = replace(new, experiments=tuple(replace(e, repeats=None) for e in experiments))
    open_loop = [e for e in new.experiments if e.kind in OPEN_LOOP_KINDS | SCALING_KINDS]
    if not new.experiments or not (new.points() or open_loop):
        raise UsageError("the plan has no points left to measure")
    if new.repeats < 1 or new.duration_s <= 0 or new.warmup_s < 0 or new.retries < 0:
        raise UsageError("need repeats >= 1, retries >= 0, duration > 0 and warm-up >= 0")
    return new


def _override_grid(spec: ExperimentSpec, flags: PlanOverrides) -> ExperimentSpec:
    if flags.connections is not None and spec.kind != "idle":
        spec = replace(spec, connections=flags.connections)
    if flags.idle is not None and spec.kind == "idle":
        spec = replace(spec, idle=flags.idle)
    if flags.msg_bytes is not None and spec.kind == "ltet":
        spec = replace(spec, msg_bytes=flags.msg_bytes)
    return spec


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
