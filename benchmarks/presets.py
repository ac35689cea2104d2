"""The named sweep plans (``quick``, ``default``, ``full``) and the experiments in each.

Which implementations each experiment measures comes from the implementation registry
(:mod:`servers.registry`), read when a preset is built, so a newly registered backend is
in every experiment its roles name.

Descriptor budget: the server holds one descriptor per connection (active or idle) plus a
few of its own, and so does the load generator, in its own process; both run under the
same ``RLIMIT_NOFILE`` (the run's environment records it). ``full`` therefore stops at
the limit minus both ends' reserves (:func:`muxlab.fdbudget.sweep_connection_budget`), and
a mechanism with a descriptor ceiling (select's ``FD_SETSIZE``) stops where its
descriptors would reach it (:data:`muxlab.fdbudget.SELECT_RESERVE`).
"""

from __future__ import annotations

from dataclasses import replace

from benchmarks.specs import (
    IDLE_ACTIVE_CONNECTIONS,
    PRESET_NAMES,
    RATIO_CONNECTIONS,
    ExperimentSpec,
    OpenLoopSpec,
    ScalingSpec,
    SweepPlan,
)
from muxlab.errors import UsageError
from muxlab.fdbudget import sweep_connection_budget
from servers import registry
from servers.loop import ET_DRAINS


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
# The fewest connections a fixed-rate latency point spreads its rate over. Each connection
# has one request in flight, so it carries at most 1 / round trip (Little's law): one
# Python-to-Python connection on loopback carried 7,000-10,600 req/s in the reference run,
# below the rate half a capacity asks for. The capacity search showed its rate carried by
# CAPACITY_HOT_CONNECTIONS connections; half that rate (latency.CAPACITY_FRACTION) over
# half as many asks no more of each connection than the search did.
LATENCY_MIN_CONNECTIONS = CAPACITY_HOT_CONNECTIONS // 2


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
            ExperimentSpec(
                "latency",
                "latency",
                impls,
                connections=(LATENCY_MIN_CONNECTIONS, 100),
                open_loop=spec,
            ),
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
            connections=(LATENCY_MIN_CONNECTIONS, 100, 1000, 10000)
            if long
            else (LATENCY_MIN_CONNECTIONS, 100, 10000),
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
