"""``thundering-herd``: N processes, each with its own epoll instance, one listening socket.

Every epoll instance that watches the listener hooks an entry into the listener's wait
queue. A new connection wakes every entry, so every process returns from ``epoll_wait``,
one ``accept()`` wins and the rest get ``EAGAIN``: N wake-ups for one connection.
``EPOLLEXCLUSIVE`` (Linux 4.5) marks the entries exclusive, so the kernel wakes one or more
of them instead of all; ``SO_REUSEPORT`` gives each process its own listening socket and
each connection is queued on exactly one of them (``socket(7)``, ``SO_REUSEPORT``).
"""

from __future__ import annotations

import multiprocessing
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from lab.demos.base import Case, Demo

WORKERS = 4
CONNECTIONS = 6
# A woken worker waits this long before accept(): a stand-in for work, and long enough
# that every worker the kernel woke has returned from epoll_wait before the connection is
# taken (otherwise late wakers find the queue empty inside the kernel and sleep again
# unseen: the wake-up still cost a context switch, but no user-space count shows it).
HOLD_S = 0.02
GAP_S = 0.08
WAIT_TIMEOUT_S = 0.1
START_TIMEOUT_S = 20.0
RUN_LIMIT_S = 30.0
# Without a herd a connection wakes about one worker; with one, about WORKERS.
HERD_WAKEUPS_PER_CONNECTION = 2.0

Watch = Callable[[socket.socket], tuple[socket.socket, select.epoll]]
"""In a worker: from the parent's socket, the listener to accept on and the epoll watching it."""


@dataclass(frozen=True)
class Setup:
    watch: Watch
    parent_listens: bool
    """False: the parent only reserves the port; each worker listens on its own socket."""


@dataclass(frozen=True)
class Counts:
    workers: int
    connections: int
    wakeups: int
    accepts: int
    accepts_eagain: int
    wakeups_per_connection: float


def watch_shared(shared: socket.socket) -> tuple[socket.socket, select.epoll]:
    """Deliberately herd-prone: a plain registration wakes every process on every connection."""
    ep = select.epoll()
    ep.register(shared.fileno(), select.EPOLLIN)
    return shared, ep


def watch_shared_exclusive(shared: socket.socket) -> tuple[socket.socket, select.epoll]:
    ep = select.epoll()
    # Allowed only with EPOLL_CTL_ADD, never MOD (epoll_ctl(2), EINVAL).
    ep.register(shared.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    return shared, ep


def watch_own_reuseport(shared: socket.socket) -> tuple[socket.socket, select.epoll]:
    own = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind(shared.getsockname())
    own.listen(64)
    ep = select.epoll()
    ep.register(own.fileno(), select.EPOLLIN)
    return own, ep


def _worker(
    watch: Watch, shared: socket.socket, ready: Connection, stop: Event, results: Connection
) -> None:
    listener, ep = watch(shared)
    listener.setblocking(False)
    ready.send(True)
    wakeups = accepts = eagains = 0
    deadline_ns = time.monotonic_ns() + int(RUN_LIMIT_S * 1e9)
    while not stop.is_set() and time.monotonic_ns() < deadline_ns:
        if not ep.poll(WAIT_TIMEOUT_S):
            continue
        wakeups += 1
        time.sleep(HOLD_S)
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            eagains += 1
            continue
        conn.close()
        accepts += 1
    results.send((wakeups, accepts, eagains))


def _parent_socket(listens: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEPORT on the parent's socket lets the workers bind the same port; a socket
    # that is bound but not listening receives no connections.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    if listens:
        sock.listen(64)
    return sock


def measure(setup: Setup) -> Counts:
    # spawn: the workers get nothing but their arguments, as real pre-forked servers that
    # exec would; the listening socket travels as a duplicated descriptor.
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    shared = _parent_socket(setup.parent_listens)
    pipes = [ctx.Pipe(duplex=False) for _ in range(WORKERS)]
    readies = [ctx.Pipe(duplex=False) for _ in range(WORKERS)]
    procs = [
        ctx.Process(
            target=_worker, args=(setup.watch, shared, ready_w, stop, result_w), daemon=True
        )
        for (_, result_w), (_, ready_w) in zip(pipes, readies, strict=True)
    ]
    clients: list[socket.socket] = []
    try:
        for proc in procs:
            proc.start()
        for ready_r, _ in readies:
            if not ready_r.poll(START_TIMEOUT_S):
                raise RuntimeError("a thundering-herd worker did not start")
            ready_r.recv()
        time.sleep(GAP_S)  # every worker is inside epoll_wait
        for _ in range(CONNECTIONS):
            clients.append(socket.create_connection(shared.getsockname(), timeout=5))
            time.sleep(GAP_S)
        stop.set()
        totals = [0, 0, 0]
        for result_r, _ in pipes:
            if not result_r.poll(START_TIMEOUT_S):
                raise RuntimeError("a thundering-herd worker did not report")
            for i, value in enumerate(result_r.recv()):
                totals[i] += value
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for client in clients:
            client.close()
        shared.close()
    wakeups, accepts, eagains = totals
    per_connection = round(wakeups / CONNECTIONS, 2)
    return Counts(WORKERS, CONNECTIONS, wakeups, accepts, eagains, per_connection)


def shows_bug(counts: Counts) -> bool:
    """Connections woke about every worker instead of about one."""
    return counts.wakeups_per_connection >= HERD_WAKEUPS_PER_CONNECTION


DEMO = Demo(
    name="thundering-herd",
    summary="N processes with their own epoll on one listener: all wake per connection",
    did=(
        f"{WORKERS} worker processes (multiprocessing, spawn), each with its own epoll "
        f"instance; {CONNECTIONS} clients connect to 127.0.0.1, {GAP_S * 1000:.0f} ms apart; "
        f"a woken worker waits {HOLD_S * 1000:.0f} ms (its 'work') and then calls accept(); "
        "wake-ups (epoll_wait calls returning events), accepts and EAGAINs are summed"
    ),
    why=(
        "each epoll instance puts its own entry on the listener's wait queue and a new "
        "connection wakes all of them: N wake-ups, 1 accept, N-1 EAGAINs. With "
        "EPOLLEXCLUSIVE the entries are exclusive and the kernel wakes one or more of them "
        "(usually one). With SO_REUSEPORT every worker has its own listening socket and the "
        "kernel hands each connection to exactly one of them."
    ),
    man=(
        "epoll_ctl(2), EPOLLEXCLUSIVE (since Linux 4.5); socket(7), SO_REUSEPORT; "
        'epoll(7), "Questions and answers" (two epoll instances on one descriptor)'
    ),
    naive=Case("shared listener, plain EPOLLIN", Setup(watch_shared, parent_listens=True)),
    fixed=(
        Case(
            "shared listener, EPOLLIN|EPOLLEXCLUSIVE",
            Setup(watch_shared_exclusive, parent_listens=True),
        ),
        Case("SO_REUSEPORT listener per worker", Setup(watch_own_reuseport, parent_listens=False)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)
