"""A worker of ``muxlab serve --workers N`` (:mod:`servers.multiproc`): how connections
reach it (``--balance``), what it is given, and its whole life in a spawned interpreter.

A worker opens its own ``SO_REUSEPORT`` listener or takes the parent's shared one, runs
one backend and loop on it (``EPOLLEXCLUSIVE`` on the listener with ``--balance
exclusive``), and tells the parent over its pipe that it is ready, its counters on
SIGUSR1, its final counters, and why it failed, one :class:`WorkerMessage` each.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal, get_args

from servers.backends import (
    Backend,
    BackendName,
    BackendUnavailableError,
    brings_own_loop,
    create_backend,
    require_available,
)
from servers.backends.epoll_backend import EdgeTriggeredEpollBackend, EpollBackend
from servers.loop import Server, ServerConfig, ServerFailedError, ServerSetupError
from servers.uring_loop import UringServer

BalanceName = Literal["reuseport", "shared", "exclusive"]
BALANCE_NAMES: tuple[BalanceName, ...] = get_args(BalanceName)
# prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Balance:
    """How connections are spread over workers (see the module's docstring)."""

    name: BalanceName
    shared_listener: bool  # one listener opened by the parent and inherited by all
    exclusive: bool  # the shared listener is registered EPOLLEXCLUSIVE


BALANCES: dict[BalanceName, Balance] = {
    "reuseport": Balance("reuseport", shared_listener=False, exclusive=False),
    "shared": Balance("shared", shared_listener=True, exclusive=False),
    "exclusive": Balance("exclusive", shared_listener=True, exclusive=True),
}


class ExclusiveListenerEpoll(EpollBackend):
    """epoll-lt whose registration of the listener carries ``EPOLLEXCLUSIVE``. The flag is
    allowed with ``EPOLL_CTL_ADD`` only, never ``MOD`` (``epoll_ctl(2)``, EINVAL); the loop
    only ever adds and removes the listener, never modifies it."""

    def __init__(self, listener_fd: int) -> None:
        super().__init__()
        self._listener_fd = listener_fd

    def register(self, fd: int, events: int) -> None:
        super().register(fd, events | select.EPOLLEXCLUSIVE if fd == self._listener_fd else events)


class ExclusiveListenerEdgeEpoll(ExclusiveListenerEpoll):
    name = "epoll-et"
    edge_triggered = True
    _mode_flags = EdgeTriggeredEpollBackend._mode_flags


# The backends that can watch a shared listener exclusively, and how.
EXCLUSIVE_BACKENDS: dict[BackendName, type[ExclusiveListenerEpoll]] = {
    "epoll-lt": ExclusiveListenerEpoll,
    "epoll-et": ExclusiveListenerEdgeEpoll,
}


def exclusive_refusal(backend: str) -> str | None:
    """Why ``--balance exclusive`` cannot run on ``backend``, or ``None`` when it can."""
    if backend in EXCLUSIVE_BACKENDS:
        return None
    return (
        f"--balance exclusive needs EPOLLEXCLUSIVE, which only epoll has (epoll_ctl(2)); "
        f"{backend} wakes every waiter: use --balance shared or reuseport"
    )


@dataclass(frozen=True)
class WorkerSpec:
    """What a spawned worker needs, picklable; its listener travels beside it."""

    index: int
    server: ServerConfig
    balance: BalanceName
    cpu: int | None
    parent_pid: int


MessageKind = Literal["ready", "counters", "final", "failed"]


@dataclass(frozen=True)
class WorkerMessage:
    """Worker to parent, over its pipe: one per event, in order."""

    kind: MessageKind
    index: int
    counters: dict[str, Any] | None = None
    detail: str = ""


# -- the worker ----------------------------------------------------------------------------


def open_reuseport_listener(host: str, port: int, backlog: int) -> socket.socket:
    """This worker's own listener in the port's ``SO_REUSEPORT`` group."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(address, family=family, backlog=backlog, reuse_port=True)
    except OSError as exc:
        raise ServerSetupError(f"cannot listen on {host}:{port} with SO_REUSEPORT: {exc}") from None
    listener.setblocking(False)
    return listener


def stop_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the parent dies, even by SIGKILL (``prctl(2)``,
    ``PR_SET_PDEATHSIG``), so no worker outlives its server; if the parent is gone
    already, stop now."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def create_worker_server(
    spec: WorkerSpec,
    listener: socket.socket,
    on_snapshot: Callable[[dict[str, Any]], None],
) -> Server | UringServer:
    config = spec.server
    if brings_own_loop(config.backend):
        require_available(config.backend)
        return UringServer(config, listener=listener, on_snapshot=on_snapshot)
    backend: Backend
    if BALANCES[spec.balance].exclusive:
        require_available(config.backend)
        backend = EXCLUSIVE_BACKENDS[config.backend](listener.fileno())
    else:
        backend = create_backend(config.backend)
    return Server(config, backend=backend, listener=listener, on_snapshot=on_snapshot)


def worker_main(spec: WorkerSpec, listener: socket.socket | None, pipe: Connection) -> None:
    """A worker's whole life; runs in a spawned interpreter. Its exit status is 0 after a
    requested stop, 1 when it could not start or its listener or backend failed."""
    logging.basicConfig(
        format=f"muxlab serve worker {spec.index}: %(levelname)s: %(message)s", stream=sys.stderr
    )
    # The parent forwards SIGINT as SIGTERM; a terminal's Ctrl-C also reaches the whole
    # process group, and one stop request is enough. A SIGTERM that comes before the
    # server exists is kept and honoured once it does.
    stop_early: list[int] = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_early.append(signum))
    stop_with_parent(spec.parent_pid)
    try:
        if spec.cpu is not None:
            os.sched_setaffinity(0, {spec.cpu})
        if listener is None:
            server_config = spec.server
            listener = open_reuseport_listener(
                server_config.host, server_config.port, server_config.backlog
            )
        server = create_worker_server(
            spec, listener, lambda snap: pipe.send(WorkerMessage("counters", spec.index, snap))
        )
    except (OSError, ValueError, ServerSetupError, BackendUnavailableError) as exc:
        pipe.send(WorkerMessage("failed", spec.index, detail=str(exc)))
        sys.exit(1)
    signal.signal(signal.SIGTERM, lambda signum, frame: server.request_stop())
    signal.signal(signal.SIGUSR1, lambda signum, frame: server.request_snapshot())
    if stop_early:
        server.request_stop()
    pipe.send(WorkerMessage("ready", spec.index))
    status = 0
    try:
        server.run()
    except ServerFailedError as exc:
        pipe.send(WorkerMessage("failed", spec.index, detail=str(exc)))
        status = 1
    pipe.send(WorkerMessage("final", spec.index, server.counters.snapshot()))
    sys.exit(status)
