"""An event trace of a real muxlab server: every wait, what it returned, and what followed.

The server is :class:`servers.loop.Server`, unmodified, running in a thread of this
process. Two things are wrapped so it can be watched without changing it:

- the backend, in a :class:`TracingBackend` that records each ``wait`` (and the events it
  returned) and each change of interest, then calls the real backend;
- the sockets, as :class:`TracedListener` and :class:`TracedSocket`, subclasses of
  ``socket.socket`` that record ``accept``, ``recv``, ``send``, ``sendmsg`` and ``close``
  (the calls ``servers/loop.py`` makes) with their byte counts, marking ``EAGAIN``.

A scripted client then connects, sends each message size on each connection, reads the
echo back in full, and closes. Because the client takes each step only once the server is
back in its wait call with the previous step handled, the timeline is deterministic in
everything but the timestamps: the same script
gives the same sequence of calls, and ``epoll-lt`` and ``epoll-et`` differ exactly where
``man 7 epoll`` says they do.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, Self, TypeVar

from lab.events import event_names
from muxlab.atomic import write_json_atomic
from muxlab.environment import environment
from muxlab.errors import RunError
from servers.backends import Backend, BackendName, Event, create_backend
from servers.counters import Counters
from servers.lifecycle import error_kind, open_listener
from servers.loop import Server, ServerConfig

SCHEMA_VERSION = 1
CLIENT_TIMEOUT_S = 5.0
SETTLE_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 5.0

Actor = Literal["server", "client"]
T = TypeVar("T")


@dataclass(frozen=True)
class TraceConfig:
    backend: BackendName = "epoll-lt"
    connections: int = 1
    sizes_bytes: tuple[int, ...] = (100, 3000)
    read_bytes: int = 1024


@dataclass(frozen=True)
class TraceEntry:
    """One call. ``nbytes`` is what a read, write or client call moved; ``eagain`` marks a
    call that failed with EAGAIN/EWOULDBLOCK; ``events`` lists ``[fd, names]`` a wait got."""

    t_us: int
    actor: Actor
    call: str
    fd: int | None = None
    asked_bytes: int | None = None
    nbytes: int | None = None
    eagain: bool = False
    new_fd: int | None = None
    mask: str | None = None
    events: tuple[tuple[int, str], ...] = ()
    error: str | None = None
    conn: int | None = None
    """For client entries: the connection number, 1-based (client fds mean nothing here)."""


@dataclass
class Trace:
    """Entries from the server thread and the client, in the order they happened."""

    start_ns: int = field(default_factory=time.perf_counter_ns)
    entries: list[TraceEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, actor: Actor, call: str, **details: Any) -> None:
        t_us = (time.perf_counter_ns() - self.start_ns) // 1000
        entry = TraceEntry(t_us, actor, call, **details)
        with self._lock:
            self.entries.append(entry)


# -- the backend ---------------------------------------------------------------------------


class TracingBackend(Backend):
    """The real backend, with every call recorded first. Level-triggered semantics."""

    name = "tracing"

    def __init__(self, inner: Backend, trace: Trace) -> None:
        self.inner = inner
        self.trace = trace
        # Set while the server blocks in wait, i.e. has finished with every event so far.
        # The client waits for it before each step, which makes the timeline deterministic.
        self.waiting = threading.Event()

    def register(self, fd: int, events: int) -> None:
        self.trace.record("server", "register", fd=fd, mask=event_names(events))
        self.inner.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.trace.record("server", "modify", fd=fd, mask=event_names(events))
        self.inner.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.trace.record("server", "unregister", fd=fd)
        self.inner.unregister(fd)

    def wait(self, timeout_s: float | None) -> list[Event]:
        self.waiting.set()
        events = self.inner.wait(timeout_s)
        self.waiting.clear()
        reported = tuple((fd, event_names(ev)) for fd, ev in events)
        self.trace.record("server", "wait", events=reported)
        return events

    def close(self) -> None:
        self.inner.close()


class EdgeTriggeredTracingBackend(TracingBackend):
    """The same, for an edge-triggered backend: the loop reads the flag to decide to drain."""

    edge_triggered = True


def tracing_backend(inner: Backend, trace: Trace) -> TracingBackend:
    cls = EdgeTriggeredTracingBackend if inner.edge_triggered else TracingBackend
    return cls(inner, trace)


# -- the sockets ---------------------------------------------------------------------------


class AdoptedSocket(socket.socket):
    """A socket that took over another's descriptor, with the trace it records into."""

    trace: Trace

    @classmethod
    def adopt(cls, sock: socket.socket, trace: Trace) -> Self:
        traced = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        traced.trace = trace
        return traced


class TracedSocket(AdoptedSocket):
    """A connected socket whose ``recv``/``send``/``sendmsg``/``close`` are recorded."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._traced("recv", bufsize, partial(super().recv, bufsize, flags), len)

    def send(self, data: Any, flags: int = 0) -> int:
        return self._traced("send", len(data), partial(super().send, data, flags), int)

    def sendmsg(self, buffers: Iterable[Any], *args: Any) -> int:
        chunks = list(buffers)
        asked = sum(len(c) for c in chunks)
        return self._traced("sendmsg", asked, partial(super().sendmsg, chunks, *args), int)

    def close(self) -> None:
        if self.fileno() >= 0:
            self.trace.record("server", "close", fd=self.fileno())
        super().close()

    def _traced(self, call: str, asked: int, do: Callable[[], T], nbytes: Callable[[T], int]) -> T:
        """``do()``, recorded as ``call`` of ``asked`` bytes: what it moved (``nbytes`` of
        its result), or that it hit EAGAIN, or the error it raised."""
        fd = self.fileno()
        try:
            done = do()
        except BlockingIOError:
            self.trace.record("server", call, fd=fd, asked_bytes=asked, eagain=True)
            raise
        except OSError as exc:
            self.trace.record("server", call, fd=fd, asked_bytes=asked, error=error_kind(exc))
            raise
        self.trace.record("server", call, fd=fd, asked_bytes=asked, nbytes=nbytes(done))
        return done


class TracedListener(AdoptedSocket):
    """A listening socket whose ``accept`` is recorded and hands out traced sockets."""

    def accept(self) -> tuple[socket.socket, Any]:
        fd = self.fileno()
        try:
            sock, address = super().accept()
        except BlockingIOError:
            self.trace.record("server", "accept", fd=fd, eagain=True)
            raise
        except OSError as exc:
            self.trace.record("server", "accept", fd=fd, error=error_kind(exc))
            raise
        self.trace.record("server", "accept", fd=fd, new_fd=sock.fileno())
        return TracedSocket.adopt(sock, self.trace), address


# -- running a script ----------------------------------------------------------------------


@dataclass(frozen=True)
class TraceResult:
    config: TraceConfig
    fds: dict[int, str]
    """Server descriptor -> role: ``listener``, ``wake`` (the loop's own), ``conn N``."""
    entries: tuple[TraceEntry, ...]
    server_counters: dict[str, Any]

    def summary(self) -> dict[str, int]:
        return summarize(self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "muxlab-trace",
            "config": asdict(self.config),
            "environment": environment(),
            "fds": {str(fd): role for fd, role in self.fds.items()},
            "summary": self.summary(),
            "server_counters": self.server_counters,
            "entries": [asdict(entry) for entry in self.entries],
        }

    def write_json(self, path: str) -> None:
        write_json_atomic(path, self.to_json())


def summarize(entries: Iterable[TraceEntry]) -> dict[str, int]:
    """Server-side call counts: the numbers the LT-vs-ET comparison is about."""
    counts = dict.fromkeys(
        ("wait_calls", "events", "accepts", "accepts_eagain", "recvs", "recvs_eagain",
         "sends", "sends_eagain", "bytes_in", "bytes_out", "interest_changes"), 0
    )  # fmt: skip
    for e in entries:
        if e.actor != "server":
            continue
        if e.call == "wait":
            counts["wait_calls"] += 1
            counts["events"] += len(e.events)
        elif e.call == "accept":
            counts["accepts_eagain" if e.eagain else "accepts"] += 1
        elif e.call == "recv":
            counts["recvs_eagain" if e.eagain else "recvs"] += 1
            counts["bytes_in"] += e.nbytes or 0
        elif e.call in ("send", "sendmsg"):
            counts["sends_eagain" if e.eagain else "sends"] += 1
            counts["bytes_out"] += e.nbytes or 0
        elif e.call in ("register", "modify", "unregister"):
            counts["interest_changes"] += 1
    return counts


def run_trace(config: TraceConfig, backend: Backend | None = None) -> TraceResult:
    """Run the script against a traced server; raises RunError if the echo went wrong.

    ``backend``: an instance to trace instead of ``config.backend`` (a backend of your own,
    see notebooks/04_your_own_experiment.ipynb); ``config.backend`` then only labels it.
    """
    trace = Trace()
    with contextlib.ExitStack() as undo:  # closes what was opened if setup fails midway
        listener = TracedListener.adopt(open_listener("127.0.0.1", 0, 64), trace)
        undo.callback(listener.close)
        inner = backend if backend is not None else create_backend(config.backend)
        undo.callback(inner.close)
        traced = tracing_backend(inner, trace)
        server = Server(
            ServerConfig(backend=config.backend, read_bytes=config.read_bytes),
            backend=traced,
            listener=listener,
        )
        undo.pop_all()
    listen_fd = listener.fileno()
    failures: list[BaseException] = []
    thread = threading.Thread(target=_serve, args=(server, failures), daemon=True)
    thread.start()
    clients: list[socket.socket] = []
    try:
        _run_script(server, traced, config, trace, clients)
    finally:
        for sock in clients:
            sock.close()
        server.request_stop()
        thread.join(JOIN_TIMEOUT_S)
    if thread.is_alive():
        raise RunError("the traced server did not stop")
    if failures:
        raise RunError(f"the traced server failed: {failures[0]!r}")
    entries = tuple(trace.entries)
    return TraceResult(config, _label_fds(entries, listen_fd), entries,
                       server.counters.snapshot())  # fmt: skip


def _serve(server: Server, failures: list[BaseException]) -> None:
    try:
        server.run()
    except BaseException as exc:  # reported by run_trace in the calling thread
        failures.append(exc)


def _run_script(server: Server, backend: TracingBackend, config: TraceConfig, trace: Trace,
                clients: list[socket.socket]) -> None:  # fmt: skip
    """Connect, echo every size on every connection, close; one step at a time.

    Before each step the client waits until the server is back in ``wait`` with the
    previous step fully handled, so no two steps interleave in the timeline.
    """
    counters = server.counters
    for number in range(1, config.connections + 1):
        trace.record("client", "connect", conn=number)
        sock = socket.create_connection(server.address, timeout=CLIENT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(sock)
        _settle(partial(_reached, counters, "connections_accepted", number), backend, "accepted")
    for size in config.sizes_bytes:
        for number, sock in enumerate(clients, start=1):
            trace.record("client", "send", conn=number, nbytes=size)
            echoed = _echo(sock, b"m" * size)
            if echoed != size:
                raise RunError(f"connection {number}: {echoed} of {size} bytes echoed")
            _settle(partial(bool, True), backend, "echoed")
            trace.record("client", "received", conn=number, nbytes=echoed)
    for number, sock in enumerate(clients, start=1):
        trace.record("client", "close", conn=number)
        sock.close()
        _settle(partial(_reached, counters, "connections_closed", number), backend, "closed")


def _echo(sock: socket.socket, payload: bytes) -> int:
    """Send from a thread while reading here; return how many bytes came back.

    An echo server with backpressure stops reading from a client that does not read, so a
    client that sent a large message before reading any of the echo would deadlock.
    """
    failures: list[OSError] = []

    def send() -> None:
        try:
            sock.sendall(payload)
        except OSError as exc:
            failures.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = 0
    try:
        while received < len(payload):
            chunk = sock.recv(min(len(payload) - received, 1 << 20))
            if not chunk:
                break
            received += len(chunk)
    except OSError as exc:
        failures.append(exc)
    sender.join(CLIENT_TIMEOUT_S)
    if failures:
        raise RunError(f"the scripted client failed: {failures[0]}")
    return received


def _reached(counters: Counters, name: str, count: int) -> bool:
    value: int = getattr(counters, name)
    return value >= count


def _settle(done: Callable[[], bool], backend: TracingBackend, what: str) -> None:
    """Wait until ``done()`` holds and the server is blocked in wait again."""
    deadline_ns = time.monotonic_ns() + int(SETTLE_TIMEOUT_S * 1e9)
    while not (done() and backend.waiting.is_set()):
        if time.monotonic_ns() > deadline_ns:
            raise RunError(f"the server had not {what} a connection after {SETTLE_TIMEOUT_S} s")
        time.sleep(0.001)


def _label_fds(entries: Iterable[TraceEntry], listen_fd: int) -> dict[int, str]:
    fds = {listen_fd: "listener"}
    conns = 0
    for e in entries:
        if e.call == "accept" and e.new_fd is not None:
            conns += 1
            fds[e.new_fd] = f"conn {conns}"
        elif e.call == "register" and e.fd is not None and e.fd not in fds:
            fds[e.fd] = "wake"
    return fds


# -- text ----------------------------------------------------------------------------------


def format_timeline(result: TraceResult) -> str:
    config = result.config
    sizes = ",".join(str(s) for s in config.sizes_bytes)
    lines = [
        f"muxlab trace: backend={config.backend} connections={config.connections} "
        f"sizes={sizes} bytes, recv size {config.read_bytes} bytes",
        "descriptors: " + ", ".join(f"fd {fd} = {role}" for fd, role in result.fds.items()),
        f"{'t_ms':>9}  {'who':<6}  call",
    ]
    for e in result.entries:
        indent = "" if e.call == "wait" or e.actor == "client" else "  "
        lines.append(f"{e.t_us / 1000:9.3f}  {e.actor:<6}  {indent}{_describe(e, result.fds)}")
    summary = result.summary()
    lines.append("summary: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    return "\n".join(lines)


def _describe(e: TraceEntry, fds: dict[int, str]) -> str:
    def fd(n: int | None) -> str:
        return f"fd {n} ({fds.get(n, '?') if n is not None else '?'})"

    if e.actor == "client":
        size = f" {e.nbytes} bytes" if e.nbytes is not None else ""
        return f"conn {e.conn}: {e.call}{size}"
    if e.call == "wait":
        if not e.events:
            return "wait -> nothing"
        return "wait -> " + "; ".join(f"{fd(n)} {names}" for n, names in e.events)
    if e.call in ("register", "modify"):
        return f"{e.call} {fd(e.fd)} {e.mask}"
    if e.call in ("unregister", "close"):
        return f"{e.call} {fd(e.fd)}"
    if e.eagain:
        outcome = "EAGAIN  <-- nothing left"
    elif e.error is not None:
        outcome = e.error
    elif e.call == "accept":
        outcome = f"new {fd(e.new_fd)}"
    elif e.call == "recv" and e.nbytes == 0:
        outcome = "0 bytes (end of file)"
    else:
        outcome = f"{e.nbytes} bytes"
    asked = f" {e.asked_bytes}" if e.asked_bytes is not None else ""
    return f"{e.call} {fd(e.fd)}{asked} -> {outcome}"
