"""Several server processes behind one port: ``muxlab serve --workers N --balance B``.

How a new connection reaches a worker, by ``--balance``:

- ``reuseport``: every worker opens its own listening socket with ``SO_REUSEPORT``
  (``socket(7)``, Linux 3.9). The kernel hashes each incoming connection's addresses to
  one listener of the group and queues it there, so one connection wakes one worker. The
  price: a connection queued on a busy (or dying) worker's listener waits for that worker;
  no other worker can take it.
- ``shared``: the parent opens one listening socket and every worker inherits it and
  watches it with its own backend. Each epoll instance, and each process inside
  ``poll(2)``/``select(2)``, hooks an entry into the listener's wait queue; a new
  connection wakes every entry, every worker returns from its wait, one ``accept(2)``
  wins and the others get ``EAGAIN``: the thundering herd. Each worker counts those
  wake-ups as ``accept_wakeups_empty`` (:mod:`servers.counters`).
- ``exclusive``: shared, with the listener registered ``EPOLLEXCLUSIVE`` (``epoll_ctl(2)``,
  Linux 4.5): the kernel wakes one or more of the exclusive waiters instead of all of
  them. Only epoll has the flag, so other backends are refused.

The parent serves nothing. It starts the workers (``spawn``: fresh interpreters, a
picklable :class:`WorkerSpec` each, the shared listener passed as a descriptor), prints the
ready line once every worker is listening, forwards SIGTERM and SIGINT to them, answers
SIGUSR1 with one counters line (the sum of the workers' counters under the usual keys,
plus ``workers``: each worker's own snapshot), and restarts nothing: a worker that exits
on its own is reported by number and pid, the others are stopped, and the server exits 1.
The worker's side (balances, its listener, its life) is :mod:`servers.multiproc_worker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from servers.counters import Counters
from servers.lifecycle import open_listener
from servers.loop import ServerConfig, ServerSetupError
from servers.multiproc_worker import (
    BALANCE_NAMES,
    BALANCES,
    Balance,
    BalanceName,
    ExclusiveListenerEdgeEpoll,
    ExclusiveListenerEpoll,
    WorkerMessage,
    WorkerSpec,
    exclusive_refusal,
    worker_main,
)

# What servers.cli and the tests take from here; the worker's side is in multiproc_worker.
__all__ = [
    "BALANCE_NAMES",
    "ExclusiveListenerEdgeEpoll",
    "ExclusiveListenerEpoll",
    "Supervisor",
    "WorkersConfig",
    "WorkersError",
    "combine_counters",
    "exclusive_refusal",
]

log = logging.getLogger("muxlab.multiproc")

# A spawned worker imports the server modules and opens its backend: well under a second
# on an idle machine; this bounds a start on a loaded one.
READY_TIMEOUT_S = 30.0
# Counters whose sum over workers means nothing: the largest one queue held.
_MAX_KEYS = frozenset({"peak_output_bytes"})


class WorkersError(RuntimeError):
    """A worker could not start, or died: the one-line reason names it."""


@dataclass(frozen=True)
class WorkersConfig:
    server: ServerConfig
    workers: int = 2
    balance: BalanceName = "reuseport"
    cpus: tuple[int, ...] = ()  # worker i runs on cpus[i % len(cpus)]; () not pinned

    def cpu_of(self, index: int) -> int | None:
        return self.cpus[index % len(self.cpus)] if self.cpus else None


# -- counters ------------------------------------------------------------------------------


def combine_counters(per_worker: dict[int, dict[str, Any]], pids: dict[int, int]) -> dict[str, Any]:
    """One snapshot for the whole server: every counter summed over the workers under its
    usual key, so a harness reads it as it reads one process's (CPU seconds add up to the
    server's CPU; ``max_rss_kib`` to the memory of all workers; ``peak_total_output_bytes``
    to an upper bound, the peaks need not coincide), except ``peak_output_bytes``, the
    largest one connection's queue reached, which is the maximum. ``workers`` holds each
    worker's own snapshot with its ``worker`` number and ``pid``."""
    total: dict[str, Any] = {name: 0 for name in Counters().snapshot()}
    errors: Counter[str] = Counter()
    for snap in per_worker.values():
        for name, value in snap.items():
            if name == "errors":
                errors.update(value)
            elif isinstance(value, str):
                total[name] = value  # a label (syscall_model), the same in every worker
            elif name in _MAX_KEYS:
                total[name] = max(total.get(name, 0), value)
            else:
                total[name] = total.get(name, 0) + value
    total["errors"] = dict(sorted(errors.items()))
    total["workers"] = [
        {"worker": index, "pid": pids[index], **per_worker[index]} for index in sorted(per_worker)
    ]
    return total


# -- the parent ----------------------------------------------------------------------------


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class Supervisor:
    """Starts the workers, relays signals and counters, and reports the first death."""

    def __init__(self, config: WorkersConfig, print_line: Callable[[dict[str, Any]], None]) -> None:
        self.config = config
        self._print_counters = print_line
        self._procs: dict[int, BaseProcess] = {}
        self._pids: dict[int, int] = {}
        self._pipes: dict[int, Connection] = {}
        self._finals: dict[int, dict[str, Any]] = {}
        self._failures: dict[int, str] = {}
        self._round: dict[int, dict[str, Any]] | None = None  # a SIGUSR1 being answered
        self._signals: list[int] = []
        self._stopping = False
        self.deaths: list[str] = []
        self.address: tuple[str, int] = ("", 0)
        self._wake_r, self._wake_w = socket.socketpair()
        self._previous_wakeup_fd = -1
        self._previous_handlers: dict[int, Any] = {}

    # -- start ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Spawn every worker and wait until all listen; the address they listen on."""
        config = self.config
        balance = BALANCES[config.balance]
        # Before the first worker, so a signal during the start is kept for run(), and
        # before the ready line, so SIGUSR1 never meets its default action (terminate).
        self._relay_signals()
        try:
            anchor = self._open_anchor(balance)
        except BaseException:
            self._restore_signals()
            raise
        try:
            host, port = anchor.getsockname()[:2]
            self.address = (host, port)
            server = replace(config.server, port=port)
            context = get_context("spawn")
            for index in range(config.workers):
                spec = WorkerSpec(
                    index, server, config.balance, config.cpu_of(index), parent_pid=os.getpid()
                )
                parent_end, child_end = context.Pipe(duplex=False)
                listener = anchor if balance.shared_listener else None
                proc = context.Process(
                    target=worker_main,
                    args=(spec, listener, child_end),
                    name=f"muxlab-worker-{index}",
                    daemon=True,
                )
                proc.start()
                child_end.close()
                self._procs[index] = proc
                self._pids[index] = proc.pid or 0
                self._pipes[index] = parent_end
        except BaseException:
            self.kill_all()
            self._restore_signals()
            raise
        finally:
            # Shared: the workers hold the listener now. Reuseport: the workers' listeners
            # hold the port; the parent's bound socket only reserved it until they did.
            anchor.close()
        try:
            self._await_ready()
        except BaseException:
            self.kill_all()
            self._restore_signals()
            raise
        return self.address

    def _relay_signals(self) -> None:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        self._previous_handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
        }

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._wake_r.close()
        self._wake_w.close()

    def _open_anchor(self, balance: Balance) -> socket.socket:
        """Shared: the listener itself. Reuseport: a socket bound, not listening, with
        ``SO_REUSEPORT``, so port 0 picks one port that every worker then binds too (a
        socket that does not listen is not in the group and is sent no connection)."""
        server = self.config.server
        if balance.shared_listener:
            return open_listener(server.host, server.port, server.backlog)
        try:
            family, _, _, _, address = socket.getaddrinfo(
                server.host, server.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            raise ServerSetupError(f"cannot resolve host {server.host!r}: {exc}") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ServerSetupError(
                f"cannot bind {server.host}:{server.port} with SO_REUSEPORT: {exc.strerror}"
            ) from None
        return sock

    def _await_ready(self) -> None:
        waiting = set(self._procs)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill_all()
                raise WorkersError(
                    f"workers {sorted(waiting)} not ready within {READY_TIMEOUT_S:.0f} s"
                )
            for index in list(waiting):
                pipe = self._pipes[index]
                if not pipe.poll(min(remaining, 0.05)):
                    continue
                try:
                    message: WorkerMessage = pipe.recv()
                except EOFError:
                    message = WorkerMessage("failed", index, detail="exited before it was ready")
                if message.kind == "ready":
                    waiting.discard(index)
                else:
                    self.kill_all()
                    raise WorkersError(f"worker {index} could not start: {message.detail}")

    # -- run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Relay signals and counters until every worker has exited; the final combined
        counters. :attr:`deaths` lists the workers that exited without being asked."""
        wake_r = self._wake_r
        try:
            while self._procs:
                waitables: list[Any] = [wake_r, *self._pipes.values()]
                waitables += [proc.sentinel for proc in self._procs.values()]
                ready = wait(waitables)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                self._handle_signals()
                for index in self._readable_pipes(ready):
                    self._drain(index)
                for index in self._exited(ready):
                    self._reap(index)
        finally:
            self.kill_all()
            self._restore_signals()
        return combine_counters(self._finals, self._pids)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGUSR1:
                self._start_round()
            else:
                self._stop_all()

    def _start_round(self) -> None:
        # One answer per round, as one process coalesces SIGUSR1s it has not answered yet.
        if self._round is not None or self._stopping:
            return
        self._round = {}
        for proc in self._procs.values():
            self._send(proc, signal.SIGUSR1)

    def _stop_all(self) -> None:
        self._stopping = True
        for proc in self._procs.values():
            self._send(proc, signal.SIGTERM)

    @staticmethod
    def _send(proc: BaseProcess, sig: int) -> None:
        if proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def _readable_pipes(self, ready: list[Any]) -> Iterator[int]:
        return (index for index, pipe in list(self._pipes.items()) if pipe in ready)

    def _exited(self, ready: list[Any]) -> Iterator[int]:
        return (index for index, proc in list(self._procs.items()) if proc.sentinel in ready)

    def _drain(self, index: int) -> None:
        pipe = self._pipes[index]
        try:
            while pipe.poll():
                self._on_message(pipe.recv())
        except EOFError:
            del self._pipes[index]
            pipe.close()

    def _on_message(self, message: WorkerMessage) -> None:
        if message.kind == "final" and message.counters is not None:
            self._finals[message.index] = message.counters
        elif message.kind == "failed":
            self._failures[message.index] = message.detail
        elif (
            message.kind == "counters" and message.counters is not None and self._round is not None
        ):
            self._round[message.index] = message.counters
            if set(self._round) >= set(self._procs):
                self._print_counters(combine_counters(self._round, self._pids))
                self._round = None

    def _reap(self, index: int) -> None:
        """A worker exited: read what it sent last, and if nobody asked it to stop, or it
        failed, report it and stop the others."""
        if index in self._pipes:
            self._drain(index)
        proc = self._procs.pop(index)
        proc.join()
        if self._stopping and proc.exitcode == 0:
            return
        failure = self._failures.get(index)
        death = f"worker {index} (pid {proc.pid}) {describe_exit(proc.exitcode)}"
        if failure:
            death += f": {failure}"
        self.deaths.append(death)
        log.error("%s; stopping the other workers", death)
        self._round = None
        self._stop_all()

    def kill_all(self) -> None:
        """Last resort (start failed, or leaving): SIGKILL and reap whatever still runs."""
        for proc in self._procs.values():
            if proc.is_alive():
                proc.kill()
            proc.join()
