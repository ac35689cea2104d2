"""Every implementation the lab can measure, one entry each: the sweep's single source.

An entry says what the thing is (a readiness backend on the shared loop, a completion
loop, a Python peer, a C reference), which protocols it speaks, the first descriptor it
cannot watch, why it cannot run here (one line, or ``None``), how a sweep starts it, how a
chart draws it, and where the sweep measures it and which headline ratio reads it
(:class:`SweepRoles`). The sweep, the presets, the charts, the summary, the report, the
CLI choices and the test fixtures read these entries; no other module names an
implementation to decide what to do with it.

The backends' own registry (:data:`servers.backends.BACKENDS`) stays the source for the
backends: their entries here take the name, ceiling, trigger mode and availability check
from the backend class. Adding a backend is one module, one line there and one entry here.

Order: the position in :data:`_ENTRIES` is the order of every plan, legend and table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from muxlab.errors import UsageError
from muxlab.goals import Goal
from servers.backends import BACKENDS, Backend, CompletionMechanism
from servers.peers import (
    NginxServer,
    nginx_unavailable_reason,
    python_peer_unavailable_reason,
)
from servers.process import ServerProcess
from servers.protocols import PROTOCOL_NAMES, ProtocolName

ImplKind = Literal["readiness backend", "completion loop", "python peer", "C reference"]
# The capacity ratio's sides: a mechanism that scans every registered descriptor per wait
# (poll), over one that is handed only the ready ones (epoll).
CapacitySide = Literal["scan", "ready"]


@dataclass(frozen=True)
class Style:
    """How every chart draws one implementation: line and marker colour, marker shape."""

    colour: str
    marker: str


# For a name a results file holds but this registry does not (an older or newer tree).
UNKNOWN_STYLE = Style("black", "o")


@dataclass(frozen=True)
class SweepRoles:
    """Where the presets measure an implementation and which headline ratio reads it.

    ``grid``: the active, idle, capacity and latency experiments (every mechanism);
    ``ltet``: the LT/ET experiment; ``peers_echo``/``peers_http``: the reference-peer
    experiments; ``quick``: kept where the quick preset trims a set (peers-http, capacity,
    latency). ``idle_ratio``: ratio (a), throughput kept with idle connections, judged
    against ``idle_goal`` when there is one (poll and select are expected to fall: no
    goal, the number is the point). ``cpu_subject``: muxlab's side of ratios (b) and (c);
    ``cpu_goal``: a reference's side, with the goal muxlab's CPU per request must meet
    against it. ``capacity_side``: the capacity ratio, scanning over ready-list
    mechanisms. ``uring_baseline``: what the completion loops are compared with.
    ``herd``: the multi-worker accept experiment (one scanning and one ready-list
    mechanism suffice: the herd is the listener's, not the mechanism's); ``cores``: the
    throughput-against-workers experiment.
    """

    grid: bool = False
    ltet: bool = False
    peers_echo: bool = False
    peers_http: bool = False
    quick: bool = False
    idle_ratio: bool = False
    idle_goal: Goal | None = None
    cpu_subject: bool = False
    cpu_goal: Goal | None = None
    capacity_side: CapacitySide | None = None
    uring_baseline: bool = False
    herd: bool = False
    cores: bool = False


@dataclass(frozen=True)
class ServerRequest:
    """What a sweep asks of a server it starts: one protocol, pinned to one CPU, for this
    many connections (active + idle), its stderr to ``log_path`` where it has one."""

    protocol: str
    cpu: int | None
    connections: int
    log_path: Path | None = None
    # ``muxlab serve`` options of a point's variant (``--et-drain short-read``); only a
    # muxlab backend takes them.
    extra_args: tuple[str, ...] = ()
    # The address it listens on: loopback, or the one client hosts reach (--cluster).
    host: str = "127.0.0.1"


StartedServer = ServerProcess | NginxServer


@dataclass(frozen=True)
class Implementation:
    name: str
    kind: ImplKind
    protocols: tuple[ProtocolName, ...]
    # The first descriptor number it cannot watch (select's FD_SETSIZE); None: no ceiling.
    fd_ceiling: int | None
    # What the ceiling is called, with its man page: "FD_SETSIZE, select(2)".
    ceiling_text: str | None
    # Why it cannot run on this machine (one line), or None when it can.
    check: Callable[[], str | None]
    # A server object, not started yet: the sweep starts, snapshots and stops it.
    server: Callable[[ServerRequest], StartedServer]
    style: Style
    roles: SweepRoles
    edge_triggered: bool = False
    # Takes ``muxlab serve --et-drain short-read`` (an edge-triggered backend whose class
    # sets ``short_read_drain``; servers/loop.py).
    takes_et_drain: bool = False

    def unavailable_reason(self, protocol: str) -> str | None:
        """Why it cannot serve ``protocol`` here, or ``None`` when it can."""
        if protocol not in self.protocols:
            spoken = " and ".join(p.upper() for p in self.protocols)
            return f"{self.name} is compared on {spoken} only"
        return self.check()

    def ceiling_reason(self, connections: int, reserved_fds: int) -> str | None:
        """Why it cannot hold ``connections`` beside ``reserved_fds`` descriptors of its
        own (descriptors are allocated lowest first), or ``None`` when it can."""
        if self.fd_ceiling is None or connections + reserved_fds <= self.fd_ceiling:
            return None
        return (
            f"{self.name}: {connections} connections + {reserved_fds} reserved descriptors "
            f"pass its descriptor ceiling of {self.ceiling_label()}"
        )

    def ceiling_label(self) -> str:
        """``1024 (FD_SETSIZE, select(2))``; empty without a ceiling."""
        if self.fd_ceiling is None:
            return ""
        named = f" ({self.ceiling_text})" if self.ceiling_text else ""
        return f"{self.fd_ceiling}{named}"

    def max_connections(self, reserved_fds: int) -> int | None:
        """The most connections it holds beside ``reserved_fds``; ``None``: no ceiling."""
        return None if self.fd_ceiling is None else self.fd_ceiling - reserved_fds


class UnknownImplementationError(UsageError):
    """A name that is not in the registry."""


# -- how each kind is started ----------------------------------------------------------


def serve(name: str) -> Callable[[ServerRequest], StartedServer]:
    """``muxlab serve --backend NAME``."""
    return spawned(name, ("-m", "muxlab", "serve"), "--backend")


def python_peer(name: str) -> Callable[[ServerRequest], StartedServer]:
    """``python -m servers.peers --impl NAME``: same options, ready line and counters."""
    return spawned(name, ("-m", "servers.peers"), "--impl")


def spawned(
    name: str, command: tuple[str, ...], impl_option: str
) -> Callable[[ServerRequest], StartedServer]:
    """A server this interpreter runs as ``python COMMAND IMPL_OPTION NAME``."""

    def start(request: ServerRequest) -> StartedServer:
        return ServerProcess(
            name,
            request.protocol,
            host=request.host,
            cpu=request.cpu,
            extra_args=list(request.extra_args),
            command=command,
            impl_option=impl_option,
        )

    return start


# nginx's worker_connections must cover every connection the load holds, plus the
# listener and its own few (nginx docs, events module, worker_connections).
NGINX_SPARE_CONNECTIONS = 100


def nginx(request: ServerRequest) -> StartedServer:
    return NginxServer(
        request.protocol,
        host=request.host,
        cpu=request.cpu,
        connections=request.connections + NGINX_SPARE_CONNECTIONS,
        log_path=request.log_path,
    )


def backend_entry(
    name: str, style: Style, roles: SweepRoles, ceiling_text: str | None = None
) -> Implementation:
    """A backend's entry: name, ceiling, trigger mode and availability from its class in
    :data:`servers.backends.BACKENDS`."""
    cls = BACKENDS[name]  # type: ignore[index]
    return backend_class_entry(cls, style, roles, ceiling_text)


def backend_class_entry(
    cls: type[Backend] | type[CompletionMechanism],
    style: Style,
    roles: SweepRoles,
    ceiling_text: str | None = None,
) -> Implementation:
    """The entry of a backend class: its kind from what it is (a completion mechanism
    brings its own loop), started by ``muxlab serve --backend NAME``."""
    kind: ImplKind = (
        "completion loop" if issubclass(cls, CompletionMechanism) else ("readiness backend")
    )
    return Implementation(
        name=cls.name,
        kind=kind,
        protocols=PROTOCOL_NAMES,
        fd_ceiling=cls.fd_ceiling,
        ceiling_text=ceiling_text,
        check=cls.unavailable_reason,
        server=serve(cls.name),
        style=style,
        roles=roles,
        edge_triggered=cls.edge_triggered,
        takes_et_drain=getattr(cls, "short_read_drain", False),
    )


def reference_entry(
    name: str,
    kind: ImplKind,
    protocols: tuple[ProtocolName, ...],
    check: Callable[[], str | None],
    server: Callable[[ServerRequest], StartedServer],
    style: Style,
    roles: SweepRoles,
) -> Implementation:
    """The entry of a reference server (a Python peer, nginx): no descriptor ceiling of
    its own and none of the muxlab backends' options."""
    return Implementation(name, kind, protocols, None, None, check, server, style, roles)


def peer_entry(name: str, style: Style, roles: SweepRoles) -> Implementation:
    def check() -> str | None:
        return python_peer_unavailable_reason(name)

    return reference_entry(
        name, "python peer", PROTOCOL_NAMES, check, python_peer(name), style, roles
    )


EPOLL_IDLE_GOAL = Goal(">=", 0.9)  # epoll keeps 90% of its 0-idle throughput
# What an epoll server in Python should manage against the references (README, "Claims").
UVLOOP_GOAL = Goal("<=", 1.0)  # no more CPU per request than uvloop
ASYNCIO_GOAL = Goal("<", 1.0)  # less CPU per request than asyncio

# Both epoll modes: in every experiment but herd, muxlab's side of the headline ratios,
# the ready-list side of the capacity ratio. epoll-lt adds the roles one mode suffices for.
EPOLL_ROLES = SweepRoles(
    grid=True,
    ltet=True,
    peers_echo=True,
    peers_http=True,
    idle_ratio=True,
    idle_goal=EPOLL_IDLE_GOAL,
    cpu_subject=True,
    capacity_side="ready",
    cores=True,
)

_ENTRIES: list[Implementation] = [
    backend_entry(
        "select",
        Style("tab:red", "o"),
        SweepRoles(grid=True, idle_ratio=True),
        ceiling_text="FD_SETSIZE, select(2)",
    ),
    backend_entry(
        "poll",
        Style("tab:orange", "s"),
        SweepRoles(grid=True, quick=True, idle_ratio=True, capacity_side="scan", herd=True),
    ),
    backend_entry(
        "epoll-lt",
        Style("tab:blue", "^"),
        replace(EPOLL_ROLES, quick=True, uring_baseline=True, herd=True),
    ),
    backend_entry("epoll-et", Style("tab:green", "D"), EPOLL_ROLES),
    backend_entry("io_uring-poll", Style("tab:cyan", "v"), SweepRoles(grid=True, idle_ratio=True)),
    backend_entry(
        "io_uring", Style("navy", "P"), SweepRoles(grid=True, peers_echo=True, idle_ratio=True)
    ),
    reference_entry(
        "nginx",
        "C reference",
        NginxServer.protocols,
        nginx_unavailable_reason,
        nginx,
        Style("tab:gray", "X"),
        SweepRoles(peers_http=True, quick=True),
    ),
    peer_entry(
        "asyncio-protocol",
        Style("tab:purple", "*"),
        SweepRoles(peers_echo=True, peers_http=True, cpu_goal=ASYNCIO_GOAL),
    ),
    peer_entry(
        "asyncio-streams",
        Style("tab:pink", "h"),
        SweepRoles(peers_echo=True, cpu_goal=ASYNCIO_GOAL),
    ),
    peer_entry(
        "uvloop-protocol",
        Style("tab:brown", "p"),
        SweepRoles(peers_echo=True, peers_http=True, quick=True, cpu_goal=UVLOOP_GOAL),
    ),
    peer_entry("uvloop-streams", Style("tab:olive", "<"), SweepRoles(peers_echo=True)),
]


# -- reading -----------------------------------------------------------------------------


def entries() -> tuple[Implementation, ...]:
    """Every entry, in the registry's order."""
    return tuple(_ENTRIES)


def names(*kinds: ImplKind) -> tuple[str, ...]:
    """Every name, or those of the given kinds, in the registry's order."""
    return tuple(e.name for e in _ENTRIES if not kinds or e.kind in kinds)


def where(wanted: Callable[[SweepRoles], bool]) -> tuple[str, ...]:
    """The names whose roles satisfy ``wanted``, in the registry's order."""
    return tuple(e.name for e in _ENTRIES if wanted(e.roles))


def find(name: str) -> Implementation | None:
    return next((e for e in _ENTRIES if e.name == name), None)


def get(name: str) -> Implementation:
    entry = find(name)
    if entry is None:
        raise UnknownImplementationError(
            f"unknown implementation {name!r} (choose from {', '.join(names())})"
        )
    return entry


def takes_et_drain(name: str) -> bool:
    """Whether the implementation named ``name`` runs ``--et-drain short-read``; an
    unknown name does not."""
    entry = find(name)
    return entry is not None and entry.takes_et_drain


def style_of(name: str) -> Style:
    """How to draw ``name``; a neutral style for a name this tree does not know."""
    entry = find(name)
    return UNKNOWN_STYLE if entry is None else entry.style


def draw_order(name: str) -> int:
    """Position in the registry (legends, tables); unknown names come last."""
    found = [i for i, e in enumerate(_ENTRIES) if e.name == name]
    return found[0] if found else len(_ENTRIES)


# -- adding ----------------------------------------------------------------------------


def register(entry: Implementation) -> None:
    """Add an entry at the end. A name or a colour already taken is refused: two lines
    of one colour could not be told apart on a chart."""
    if find(entry.name) is not None:
        raise ValueError(f"implementation {entry.name!r} is registered already")
    taken = {e.style.colour: e.name for e in _ENTRIES}
    if entry.style.colour in taken:
        raise ValueError(
            f"{entry.name}: colour {entry.style.colour!r} is {taken[entry.style.colour]}'s"
        )
    _ENTRIES.append(entry)


def unregister(name: str) -> None:
    _ENTRIES.remove(get(name))


@contextmanager
def registered(entry: Implementation) -> Iterator[Implementation]:
    """``entry`` in the registry for the duration of a ``with`` block (tests)."""
    register(entry)
    try:
        yield entry
    finally:
        unregister(entry.name)
