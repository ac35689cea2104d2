"""Reference peers: what a user would otherwise pick, measured the same way as muxlab.

- ``asyncio-protocol`` / ``asyncio-streams``: the standard library's event loop (epoll
  through ``selectors``), with the low-level ``Protocol`` API and with the streams API.
- ``uvloop-protocol`` / ``uvloop-streams``: the same code on uvloop (libuv, in C).
- ``nginx``: one worker, HTTP only, from a generated configuration (:class:`NginxServer`).

The Python peers run the very sessions of :mod:`servers.protocols`, so they send the same
bytes as ``muxlab serve``, and they speak its process interface: the same ready line, a
``muxlab: counters {json}`` line on SIGUSR1 and at shutdown, exit 0 on SIGTERM/SIGINT.
They count only what they can see without instrumenting the loop: bytes in, bytes out
(handed to the transport), connections and CPU time; wait calls and reads are not known.

nginx sends the same body and ``Content-Type`` as :data:`servers.protocols.HTTP_OK`, but
adds ``Server``, ``Date`` and ``Connection`` headers (about 80 bytes per reply); it has
no counters, so its CPU time is read from ``/proc/<worker>/stat`` (``proc(5)``).
"""

from __future__ import annotations

import asyncio
import grp
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from muxlab.clibase import OneLineParser
from muxlab.cpu import parent_pid, pin_to_cpu, process_cpu_times
from muxlab.errors import UsageError
from servers.contract import ReadyLine, format_counters_line
from servers.counters import Counters
from servers.process import ChildServer, ServerProcessError, terminate
from servers.protocols import HTTP_BODY, PROTOCOL_NAMES, PROTOCOLS, ProtocolName

PythonPeerName = Literal["asyncio-protocol", "asyncio-streams", "uvloop-protocol", "uvloop-streams"]


@dataclass(frozen=True)
class PythonPeer:
    """One Python peer: which event loop runs it and which asyncio API it is written in."""

    name: PythonPeerName
    uvloop: bool  # uvloop's loop (libuv, in C) instead of asyncio's (selectors, epoll)
    streams: bool  # asyncio.start_server and streams instead of a Protocol class


PYTHON_PEERS: dict[str, PythonPeer] = {
    peer.name: peer
    for peer in (
        PythonPeer("asyncio-protocol", uvloop=False, streams=False),
        PythonPeer("asyncio-streams", uvloop=False, streams=True),
        PythonPeer("uvloop-protocol", uvloop=True, streams=False),
        PythonPeer("uvloop-streams", uvloop=True, streams=True),
    )
}

# Only what a peer really measures goes into its counters line; a 0 for wait_calls would
# read as "no wait calls", not "not measured".
PEER_COUNTERS = (
    "bytes_in",
    "bytes_out",
    "connections_accepted",
    "connections_open",
    "connections_closed",
    "errors",
    "cpu_user_s",
    "cpu_system_s",
    "max_rss_kib",
)
BACKLOG = 4096
READ_BYTES = 65536
NGINX_READY_TIMEOUT_S = 10.0


def uvloop_missing() -> bool:
    return importlib.util.find_spec("uvloop") is None


def nginx_path() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def python_peer_unavailable_reason(name: str) -> str | None:
    """Why the Python peer ``name`` cannot run here, or ``None`` when it can."""
    if PYTHON_PEERS[name].uvloop and uvloop_missing():
        return "uvloop is not installed (pip install uvloop)"
    return None


def nginx_unavailable_reason() -> str | None:
    if nginx_path() is None:
        return "nginx is not installed (Debian package nginx-light)"
    return None


def counters_snapshot(counters: Counters) -> dict[str, Any]:
    snapshot = counters.snapshot()
    return {name: snapshot[name] for name in PEER_COUNTERS}


# -- the Python peers ------------------------------------------------------------------


class PeerProtocol(asyncio.Protocol):
    """One connection on the ``Protocol`` API: session in, transport out."""

    def __init__(self, protocol: ProtocolName, counters: Counters) -> None:
        self._session = PROTOCOLS[protocol]()
        self._counters = counters
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport; it has the same API.
        self._transport = transport  # type: ignore[assignment]
        self._counters.connections_accepted += 1
        self._counters.connections_open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._counters.connections_open -= 1
        self._counters.connections_closed += 1
        if exc is not None:
            self._counters.errors[type(exc).__name__] += 1

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._counters.bytes_in += len(data)
        reply = self._session.data_received(data)
        if reply:
            transport.write(reply)
            self._counters.bytes_out += len(reply)
        if self._session.wants_close:
            transport.close()

    # Backpressure, as muxlab's high-water mark: stop reading from a client that does not
    # read its replies, so the transport's buffer stays bounded.
    def pause_writing(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        assert self._transport is not None
        self._transport.resume_reading()


def streams_handler(
    protocol: ProtocolName, counters: Counters
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = PROTOCOLS[protocol]()
        counters.connections_accepted += 1
        counters.connections_open += 1
        try:
            while not session.wants_close:
                data = await reader.read(READ_BYTES)
                if not data:
                    break
                counters.bytes_in += len(data)
                reply = session.data_received(data)
                if reply:
                    writer.write(reply)
                    counters.bytes_out += len(reply)
                    await writer.drain()
        except OSError as exc:
            counters.errors[type(exc).__name__] += 1
        finally:
            counters.connections_open -= 1
            counters.connections_closed += 1
            writer.close()

    return handle


async def serve_python_peer(impl: str, protocol: ProtocolName, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    counters = Counters(syscall_model="uncounted")
    server: asyncio.base_events.Server
    if PYTHON_PEERS[impl].streams:
        server = await asyncio.start_server(
            streams_handler(protocol, counters), host, port, backlog=BACKLOG
        )
    else:
        server = await loop.create_server(
            lambda: PeerProtocol(protocol, counters), host, port, backlog=BACKLOG
        )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(format_counters_line(counters_snapshot(counters)), flush=True)
    )
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    print(ReadyLine(bound_host, bound_port, impl, protocol).format(), flush=True)
    await stop.wait()
    server.close()
    print(format_counters_line(counters_snapshot(counters)), flush=True)


def run_python_peer(impl: str, protocol: ProtocolName, host: str, port: int) -> None:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if PYTHON_PEERS[impl].uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve_python_peer(impl, protocol, host, port))


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="python -m servers.peers",
        description="Run a reference peer server with muxlab serve's process interface.",
    )
    parser.add_argument("--impl", choices=list(PYTHON_PEERS), required=True)
    parser.add_argument("--protocol", choices=PROTOCOL_NAMES, default="echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU number")
    args = parser.parse_args(argv)
    reason = python_peer_unavailable_reason(args.impl)
    if reason is not None:
        parser.exit(2, f"{parser.prog}: error: {args.impl}: {reason}\n")
    if args.cpu is not None:
        try:
            pin_to_cpu(args.cpu)
        except UsageError as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    try:
        run_python_peer(args.impl, args.protocol, args.host, args.port)
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}\n")
    return 0


# -- nginx -----------------------------------------------------------------------------

NGINX_CONF = """\
# Generated by muxlab (servers/peers.py): {workers} worker(s), one keep-alive HTTP location.
daemon off;
master_process on;
worker_processes {workers};
worker_cpu_affinity {affinity};
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log stderr warn;
{user}
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    server_tokens off;
    # nginx closes a keep-alive connection after 1000 requests by default (1.19.10+);
    # the load generator's connections live for the whole run.
    keepalive_requests 1000000000;
    keepalive_timeout 3600s;
    # A connection that has sent no request yet is closed after client_header_timeout
    # (60 s by default, nginx docs, http core module): the load generator's idle
    # connections never send one, and a 60 s hold lost every one of them to it
    # (results/c50k/README.md).
    client_header_timeout 3600s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port} backlog={backlog}{reuseport};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""


# nginx's master must start as root to run its workers as another user (nginx docs,
# core module, "user"); a benchmark peer has no reason to serve as root. Debian's nobody
# and nogroup exist on every install.
NGINX_USER = ("nobody", "nogroup")


def worker_user_directive() -> str:
    """``user nobody nogroup;`` when running as root; nothing otherwise (nginx then keeps
    the caller's user and warns only if it is root)."""
    if os.geteuid() != 0:
        return ""
    user, group = NGINX_USER
    try:
        pwd.getpwnam(user)
        grp.getgrnam(group)
    except KeyError:
        raise ServerProcessError(
            f"nginx as root needs the unprivileged user {user}:{group} for its workers"
        ) from None
    return f"user {user} {group};"


def free_port(host: str) -> int:
    """A port nothing listens on now; nginx cannot take port 0, so one is picked here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = parent_pid(int(entry.name))
        except OSError:
            continue  # exited while we looked
        if parent == pid:
            children.append(int(entry.name))
    return children


class NginxServer(ChildServer):
    """nginx with one worker (or ``workers``, each with its own ``SO_REUSEPORT`` listener,
    as ``muxlab serve --balance reuseport``); the same methods as :class:`ServerProcess`
    that a sweep uses."""

    # Its configuration (NGINX_CONF) serves one HTTP location: HTTP is all it is compared on.
    protocols: tuple[ProtocolName, ...] = ("http",)

    def __init__(
        self,
        protocol: str = "http",
        *,
        host: str = "127.0.0.1",
        cpu: int | None = None,
        connections: int = 19000,
        log_path: Path | None = None,
        workers: int = 1,
    ) -> None:
        """``log_path``: where nginx's stderr (its error log) goes; default: a file in its
        temporary directory, removed with it."""
        if protocol not in self.protocols:
            raise ServerProcessError(f"nginx is compared on HTTP only, not {protocol}")
        reason = nginx_unavailable_reason()
        if reason is not None:
            raise ServerProcessError(reason)
        self.host = host
        self.port = 0
        self.cpu = cpu
        self.connections = connections  # worker_connections: per worker
        self.workers = workers
        self.log_path = log_path
        self.error_log: Path | None = None  # the file nginx's stderr goes to, once started
        self.final_counters: dict[str, Any] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._worker_pids: list[int] = []

    def config_text(self, directory: str, port: int) -> str:
        body = HTTP_BODY.decode().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        affinity = "auto" if self.cpu is None else format(1 << self.cpu, "b")
        return NGINX_CONF.format(
            affinity=affinity,
            nofile=self.connections + 100,
            dir=directory,
            user=worker_user_directive(),
            connections=self.connections,
            workers=self.workers,
            host=self.host,
            port=port,
            backlog=BACKLOG,
            # One listener per worker in the port's SO_REUSEPORT group (nginx docs, listen,
            # reuseport): the kernel spreads connections over the workers by address hash.
            reuseport=" reuseport" if self.workers > 1 else "",
            body=body,
        )

    def start(self) -> Self:
        self._dir = tempfile.TemporaryDirectory(prefix="muxlab-nginx-")
        # Workers run as NGINX_USER when the master is root: they must be able to reach
        # the temp paths the master creates (and chowns to them) under this directory.
        os.chmod(self._dir.name, 0o755)
        conf = Path(self._dir.name, "nginx.conf")
        self.port = free_port(self.host)
        conf.write_text(self.config_text(self._dir.name, self.port))
        nginx = nginx_path()
        assert nginx is not None
        self.error_log = self.log_path or Path(self._dir.name, "error.log")
        self.error_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.error_log, "ab") as stderr:
            self._proc = subprocess.Popen(
                [nginx, "-c", str(conf), "-p", self._dir.name, "-e", "stderr"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + NGINX_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerProcessError(
                    f"nginx exited with {self._proc.returncode}: {self._log_tail()} "
                    f"(log: {self.error_log})"
                )
            workers = children_of(self._proc.pid)
            if len(workers) >= self.workers and self._accepts():
                self._worker_pids = sorted(workers)
                return
            time.sleep(0.02)
        raise ServerProcessError(f"nginx did not listen on {self.host}:{self.port} in time")

    def _log_tail(self) -> str:
        """The first fatal line of the error log (nginx retries a failed bind() and ends
        with "still could not bind()", which says less), else its last line."""
        try:
            assert self.error_log is not None
            lines = self.error_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no error log)"
        fatal = [line for line in lines if "[emerg]" in line]
        return (fatal or lines or ["(empty error log)"])[0 if fatal else -1]

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        proc = self._proc
        if proc is not None:
            # SIGTERM is nginx's "fast shutdown"; SIGQUIT would wait for keep-alives.
            terminate(proc, signal.SIGTERM, timeout_s)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        return self.final_counters

    @property
    def pid(self) -> int:
        """The first worker's pid (the one worker's, by default)."""
        return self._worker_pids[0] if self._worker_pids else 0

    @property
    def worker_pids(self) -> tuple[int, ...]:
        return tuple(self._worker_pids)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def counters(self, timeout_s: float = 5.0) -> dict[str, Any]:
        user_s = system_s = 0.0
        for pid in self._worker_pids:
            times = process_cpu_times(pid)
            user_s += times.user_s
            system_s += times.system_s
        return {"cpu_user_s": user_s, "cpu_system_s": system_s}


if __name__ == "__main__":
    sys.exit(main())
