"""``uring-syscalls``: one echo workload, readiness against completion, system calls counted.

A readiness server asks the kernel *which* sockets can be read, then makes the calls
itself: per request one ``recv(2)`` and one ``send(2)`` (two ``recv`` under ET, the last
one returning ``EAGAIN``), plus its share of a wait. A completion server (the proactor
model, ``servers/uring_loop.py``) hands the kernel the receive and the send as SQEs in the
submission queue and reads the results as CQEs from the completion queue, both shared
memory; one ``io_uring_enter(2)`` per loop turn submits every SQE queued since the last
turn and sleeps until a CQE is posted. When several requests are in flight, one call
carries all of them, so a completion server can make *fewer* system calls than there are
socket operations, which a readiness server never can.

The workload (:class:`Workload`) is fixed in count, not in time: ``connections`` clients,
``rounds`` rounds; in each round every client sends one request and then every client
reads its echo back, so up to ``connections`` requests are in flight at once (notebook
05 varies that number). The counts are the
server's own (``servers/counters.py``): the difference between a snapshot taken before
the clients connect and one taken after the last echo was read, so the accepts are in it
and the closes are not. Each snapshot (SIGUSR1) costs the server about one wait of its own.
"""

from __future__ import annotations

import contextlib
import socket
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lab.demos.base import TEXT_WIDTH, Case, Demo, Outcome
from servers.backends import BACKENDS, BackendName, brings_own_loop
from servers.process import ServerProcess

CLIENT_TIMEOUT_S = 10.0
CLOSE_POLL_S = 0.01
CPU_FIELDS = ("cpu_user_s", "cpu_system_s")  # in the counters snapshot (servers/counters.py)
# The implementations shown, in the order of the table; all but the first two only shown.
BASELINE: BackendName = "epoll-lt"
COMPLETION: BackendName = "io_uring"
ALSO_SHOWN: tuple[BackendName, ...] = ("io_uring-poll",)
# (label, Counts field) of the table's rows; ``total`` sums the system calls above it.
ROWS = (
    ("wait (select/poll/epoll_wait)", "wait"),
    ("recv", "recv"),
    ("send / sendmsg", "send"),
    ("accept", "accept"),
    ("epoll_ctl", "epoll_ctl"),
    ("io_uring_enter", "io_uring_enter"),
    ("total", "total"),
    ("socket operations", "socket_operations"),
)


@dataclass(frozen=True)
class Workload:
    connections: int
    rounds: int
    message_bytes: int

    @property
    def requests(self) -> int:
        return self.connections * self.rounds


WORKLOAD = Workload(connections=100, rounds=20, message_bytes=64)


@dataclass(frozen=True)
class SystemCalls:
    """System calls a server made, by kind, from the difference of two counter snapshots."""

    wait: int
    recv: int
    send: int
    accept: int
    epoll_ctl: int | None
    """``None`` where the server does not count ``epoll_ctl`` (its calls are then missing
    from ``total``)."""
    io_uring_enter: int

    @property
    def total(self) -> int:
        return (
            self.wait + self.recv + self.send + self.accept + (self.epoll_ctl or 0)
            + self.io_uring_enter
        )  # fmt: skip


def system_calls(backend: BackendName, delta: Mapping[str, Any]) -> SystemCalls:
    """What each counter of ``servers/counters.py`` means as system calls, in one place.

    Readiness loop: every ``reads``/``writes``/``accepts`` counted, ``EAGAIN`` or not, is a
    ``recv``/``send`` or ``sendmsg``/``accept`` call, and a wait is ``wait_calls`` (for
    io_uring-poll it is an ``io_uring_enter``, counted in ``uring_enters`` instead).
    Completion loop: the kernel performs the receives, sends and accepts, so they are not
    calls; ``uring_enters`` is every call it made. ``ctl_calls`` (``epoll_ctl``) is read
    when the server counts it. Not counted anywhere: ``close``, ``setsockopt`` per
    connection.
    """
    enters = int(delta["uring_enters"])
    ctl = delta.get("ctl_calls")
    epoll_ctl = None if ctl is None else int(ctl)
    if brings_own_loop(backend):
        return SystemCalls(0, 0, 0, 0, epoll_ctl, enters)
    return SystemCalls(
        wait=0 if enters else int(delta["wait_calls"]),
        recv=int(delta["reads"]) + int(delta["reads_eagain"]),
        send=int(delta["writes"]) + int(delta["writes_eagain"]),
        accept=int(delta["accepts"]) + int(delta["accepts_eagain"]),
        epoll_ctl=epoll_ctl,
        io_uring_enter=enters,
    )


@dataclass(frozen=True)
class Counts:
    """Per request, except ``requests``; rounded to 3 decimals for the report."""

    requests: int
    wait: float
    recv: float
    send: float
    accept: float
    epoll_ctl: float | None
    io_uring_enter: float
    total: float
    socket_operations: float
    """Receives, sends and accepts that moved bytes or a connection, whoever made them."""


def per_request(calls: SystemCalls, operations: int, requests: int) -> Counts:
    def rate(n: int) -> float:
        return round(n / requests, 3)

    return Counts(
        requests=requests,
        wait=rate(calls.wait),
        recv=rate(calls.recv),
        send=rate(calls.send),
        accept=rate(calls.accept),
        epoll_ctl=None if calls.epoll_ctl is None else rate(calls.epoll_ctl),
        io_uring_enter=rate(calls.io_uring_enter),
        total=rate(calls.total),
        socket_operations=rate(operations),
    )


def drive(address: tuple[str, int], workload: Workload, stack: contextlib.ExitStack) -> None:
    """Connect the clients and run every round, checking every echo byte for byte.

    Blocking clients with a timeout: the client is not what is measured, and a server that
    stopped answering fails the demo after ``CLIENT_TIMEOUT_S`` instead of hanging it.
    """
    clients = [
        stack.enter_context(socket.create_connection(address, timeout=CLIENT_TIMEOUT_S))
        for _ in range(workload.connections)
    ]
    for client in clients:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for round_no in range(workload.rounds):
        pattern = (round_no % 65536).to_bytes(2, "big")
        message = (pattern * workload.message_bytes)[: workload.message_bytes]
        for client in clients:
            client.sendall(message)
        for client in clients:
            if read_exactly(client, len(message)) != message:
                raise RuntimeError("the server's echo did not match the request")


def read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


@dataclass(frozen=True)
class Served:
    """One workload served: its counts, and the server's CPU time per request.

    The CPU time is the server's own (``getrusage``, in its counters), split into user
    time (the interpreter: the loop, the protocol) and system time (the kernel, inside
    its system calls). It is a time, so it varies from run to run and is never part of
    the demo's decision; notebook 05 shows it.
    """

    counts: Counts
    cpu_user_us: float
    cpu_system_us: float


def measure_workloads(backend: BackendName, workloads: Sequence[Workload]) -> list[Served]:
    """Serve each workload in turn with one ``muxlab serve`` child (one server start for a
    series, which is most of its time)."""
    with ServerProcess(backend, "echo") as server:
        return [serve(server, backend, workload) for workload in workloads]


def measure_workload(backend: BackendName, workload: Workload) -> Counts:
    return measure_workloads(backend, [workload])[0].counts


def serve(server: ServerProcess, backend: BackendName, workload: Workload) -> Served:
    """Run ``workload`` against ``server``, then wait until it has closed every connection,
    so the closes (an end-of-file ``recv`` each) are not counted in the next workload."""
    with contextlib.ExitStack() as clients:
        before = server.counters()
        drive(server.address, workload, clients)
        after = server.counters()
    wait_until_no_connections(server)
    delta = {k: v - before[k] for k, v in after.items() if isinstance(v, int | float)}
    if delta["bytes_in"] != workload.requests * workload.message_bytes:
        raise RuntimeError(f"{backend} counted {delta['bytes_in']} bytes in, not the requests'")
    operations = int(delta["reads"]) + int(delta["writes"]) + int(delta["accepts"])
    counts = per_request(system_calls(backend, delta), operations, workload.requests)
    user_us, system_us = (delta[k] * 1e6 / workload.requests for k in CPU_FIELDS)
    return Served(counts, round(user_us, 2), round(system_us, 2))


def wait_until_no_connections(server: ServerProcess) -> None:
    deadline_ns = time.monotonic_ns() + int(CLIENT_TIMEOUT_S * 1e9)
    while server.counters()["connections_open"]:
        if time.monotonic_ns() > deadline_ns:
            raise RuntimeError(f"the server still holds connections after {CLIENT_TIMEOUT_S} s")
        time.sleep(CLOSE_POLL_S)


def measure(backend: BackendName) -> Counts:
    return measure_workload(backend, WORKLOAD)


def one_call_per_operation(counts: Counts) -> bool:
    """At least one system call per socket operation: the floor of the readiness model."""
    return counts.total >= counts.socket_operations


def summarize(outcomes: Sequence[Outcome]) -> str:
    """The counts side by side, one column per implementation, and what they show."""
    width = max(len(label) for label, _ in ROWS)
    head = "".join(f"{o.label:>15}" for o in outcomes)
    lines = ["system calls per request, side by side:", f"  {'':<{width}}{head}"]
    for label, field in ROWS:
        cells = "".join(_cell(o.counts[field]) for o in outcomes)
        lines.append(f"  {label:<{width}}{cells}")
    baseline, completion = outcomes[0], outcomes[1]
    mine, theirs = completion.counts["total"], baseline.counts["total"]
    verdict = "fewer" if mine < theirs else "NOT fewer"
    sentence = (
        f"{completion.label} made {mine:.2f} system calls per request and {baseline.label} "
        f"{theirs:.2f}, {verdict}: one io_uring_enter submitted and reaped the receives and "
        "sends of every request in flight, where readiness makes a call for each."
    )
    lines.append(textwrap.fill(sentence, TEXT_WIDTH, initial_indent="shows: ",
                               subsequent_indent="  "))  # fmt: skip
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'n/a':>15}" if value is None else f"{value:>15.3f}"


def unavailable() -> str | None:
    return BACKENDS[COMPLETION].unavailable_reason()


DEMO = Demo(
    name="uring-syscalls",
    summary="one echo workload: system calls per request, epoll-lt against io_uring",
    did=(
        f"muxlab serve (echo) with each implementation in turn; {WORKLOAD.connections} "
        f"clients connect, then in each of {WORKLOAD.rounds} rounds every client sends one "
        f"{WORKLOAD.message_bytes}-byte request and then every client reads its echo; the "
        "system calls the server made while serving them are taken from its own counters "
        "(before the clients connect, after the last echo) and divided by the requests"
    ),
    why=(
        "a readiness server (epoll-lt, io_uring-poll) learns which sockets are ready and then "
        "calls recv and send itself, so it makes at least one system call per socket "
        "operation, plus its waits (and ET's recv that returns EAGAIN). The completion loop "
        "puts the receives and sends in the submission queue and reads their results from "
        "the completion queue, shared memory both; one io_uring_enter per loop turn hands "
        "over every queued request and collects every finished one, so with many requests "
        "in flight it makes fewer calls than there are operations. The Python work per "
        "request (a CQE to decode, bytes to copy, the protocol) does not shrink."
    ),
    man="io_uring(7); io_uring_enter(2); epoll(7); recv(2), send(2)",
    naive=Case(BASELINE, BASELINE),
    fixed=(Case(COMPLETION, COMPLETION),),
    compared=tuple(Case(name, name) for name in ALSO_SHOWN),
    measure=measure,
    shows_bug=one_call_per_operation,
    unavailable=unavailable,
    verdicts=("a system call per socket operation or more", "fewer calls than operations"),
    summarize=summarize,
)
