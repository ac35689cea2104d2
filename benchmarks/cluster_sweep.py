"""``muxlab sweep --cluster``: every run's load from the cluster's client hosts, the server
on a named host.

Some facts about a sweep over several hosts, and what this module does about them:

- The load of every run is an ordinary ``muxlab load --cluster`` run
  (:func:`loadgen.cluster.run_on_hosts`: a typed ``LoadConfig`` in, a ``ClusterResult``
  out), on one Dask client kept open for the whole sweep, so an SSH cluster is started
  once, not once per run. Its result file is the one ``muxlab load --cluster --json``
  writes (``hosts`` and ``cluster`` beside the usual keys).
- The server runs on the host ``--server-host`` names (a Dask worker's name or address),
  or on this machine. On a worker it is started, asked for its counters and stopped by
  a Dask Actor pinned to that worker (``workers=``, ``allow_other_workers=False``):
  :class:`ServerOnHost` wraps the same :class:`servers.process.ServerProcess` the local
  sweep uses (ready line, SIGUSR1 counters line), so no other protocol crosses the hosts
  than Dask's own. That worker is then not a client host.
- Clients must reach the server at an address that is theirs to reach: the server
  listens on its worker's address as the scheduler knows it, or, on this machine, on the
  address this machine reaches the scheduler from (a UDP ``connect(2)`` picks the
  route's source address and sends nothing).
- A host can vanish. Every call to the server's Actor polls for its answer and checks
  between polls that the server's worker is still in the cluster: a lost server host is
  :class:`ServerHostLost` naming it, never a wait on a dead worker. A client host lost
  mid-run ends the sweep the same way, after its run's result file is written.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import distributed

from benchmarks.experiments import PointSpec
from benchmarks.topology import LOCAL_HOST, ClientHost, SweepTopology
from loadgen.child import ChildRun
from loadgen.cluster import (
    Host,
    check_skew,
    connect,
    list_hosts,
    live_workers,
    max_skew_ns_of,
    measure_clocks,
    run_on_hosts,
)
from loadgen.config import LoadConfig
from loadgen.phase_lines import Phase
from muxlab.atomic import write_json_atomic
from muxlab.errors import RunError, SetupError, UsageError
from servers import registry
from servers.process import ServerProcessError
from servers.registry import ServerRequest

T = TypeVar("T")
# Starting a server: interpreter start-up on a loaded host plus its ready line (10 s, as
# ServerProcess waits) plus Dask placing the Actor.
SERVER_START_S = 40.0
# A counters request is answered within ServerProcess.counters' 5 s, or it fails there.
SERVER_CALL_S = 20.0
# How long to wait for an answer before checking that the server's worker is still there.
ALIVE_CHECK_S = 0.5


class ServerHostLost(RunError):
    """The server's host left the cluster, or stopped answering."""


@dataclass(frozen=True)
class ClusterTarget:
    """What ``--cluster``, ``--server-host`` and ``--max-skew-ms`` ask for."""

    cluster: str
    server_host: str | None  # a Dask worker's name or address; None: this machine
    max_skew_ms: float
    processes: int  # load generator processes on each client host


def choose_server_host(hosts: Sequence[Host], wanted: str, cluster: str) -> Host:
    """The worker ``wanted`` names: its name, its address, or its host's IP address or
    host name (an SSHCluster's workers are numbered, and named here by their IP);
    UsageError naming the workers there are when none is."""
    for host in hosts:
        if wanted in (host.name, host.address, host.ip):
            return host
    resolved = _resolve(wanted)
    for host in hosts:
        if resolved is not None and host.ip == resolved:
            return host
    names = ", ".join(sorted(h.name for h in hosts)) or "none"
    raise UsageError(
        f"--server-host {wanted}: no such Dask worker in the cluster at {cluster} "
        f"(workers: {names})"
    )


def _resolve(name: str) -> str | None:
    try:
        return socket.gethostbyname(name)
    except OSError:  # socket.gaierror: not a host name here
        return None


def local_address_towards(scheduler: str) -> str:
    """This machine's source address on the route to ``scheduler`` (tcp://HOST:PORT)."""
    parts = urlsplit(scheduler)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((parts.hostname or "127.0.0.1", parts.port or 9))
            address: str = probe.getsockname()[0]
    except OSError as exc:
        raise SetupError(
            f"cannot tell this machine's address towards the scheduler {scheduler} "
            f"({exc}): run the server on a worker with --server-host"
        ) from None
    return address


class ServerOnHost:
    """A Dask Actor on the server's host: one server, started, asked, stopped there."""

    def __init__(self, impl: str, request: ServerRequest) -> None:
        self._server = registry.get(impl).server(request)

    def start(self) -> tuple[str, int]:
        self._server.start()
        return self._server.address

    def counters(self, timeout_s: float) -> dict[str, Any]:
        return self._server.counters(timeout_s)

    def stop(self, timeout_s: float) -> dict[str, Any] | None:
        return self._server.stop(timeout_s)


class RemoteServer:
    """The sweep's side of a server on another host (``ServerUnderTest``)."""

    def __init__(
        self, client: distributed.Client, host: Host, impl: str, request: ServerRequest
    ) -> None:
        self.client = client
        self.host = host
        self.impl = impl
        self.request = request
        self._actor: Any = None
        self._future: distributed.Future[Any] | None = None
        self._address = (request.host, 0)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    def start(self) -> RemoteServer:
        self._future = self.client.submit(
            ServerOnHost, self.impl, self.request, actor=True, workers=[self.host.address],
            allow_other_workers=False, pure=False, retries=0,
        )  # fmt: skip
        future = self._future
        with self.client.as_current():  # the Actor's proxy binds to the current client
            self._actor = self._wait(future.result, "start", SERVER_START_S)
        self._address = self._call("start", SERVER_START_S)
        return self

    def counters(self, timeout_s: float = 5.0) -> dict[str, Any]:
        counters: dict[str, Any] = self._call("counters", SERVER_CALL_S, timeout_s)
        return counters

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        if self._actor is None:
            return None
        try:
            final: dict[str, Any] | None = self._call("stop", SERVER_CALL_S + timeout_s, timeout_s)
        finally:
            # Dropping the last reference releases the Actor on its worker.
            self._actor = self._future = None
        return final

    def _call(self, method: str, limit_s: float, *args: Any) -> Any:
        with self.client.as_current():  # the call's future runs on the current client
            try:
                pending = getattr(self._actor, method)(*args)
            except RuntimeError as exc:  # "Worker holding Actor was lost"
                raise ServerHostLost(self._lost(f"lost before {method}: {exc}")) from None
            return self._wait(pending.result, method, limit_s)

    def _wait(self, result: Callable[[float], T], what: str, limit_s: float) -> T:
        """``result(timeout_s)``, retried while the worker is alive; ServerHostLost when it
        left or the answer is later than ``limit_s``. Blocking on the answer (not polling
        it) matters: a counters snapshot is due the moment a phase edge passes."""
        deadline = time.monotonic() + limit_s
        while True:
            try:
                return result(ALIVE_CHECK_S)
            except TimeoutError:
                pass
            except OSError as exc:  # Dask's CommClosedError among them
                raise ServerHostLost(self._lost(f"lost during {what}: {exc}")) from None
            except ServerProcessError:
                raise
            except Exception as exc:  # a failure on the host, re-raised here by Dask
                raise ServerProcessError(f"on server host {self.host.name}: {exc}") from None
            if self.host.address not in live_workers(self.client):
                raise ServerHostLost(self._lost("lost: its Dask worker left the cluster"))
            if time.monotonic() > deadline:
                raise ServerHostLost(self._lost(f"no answer to {what} within {limit_s:g} s"))

    def _lost(self, why: str) -> str:
        return f"server host {self.host.name} ({self.host.address}): {why}"


class ClusterSession:
    """The cluster a sweep runs on, open for the whole sweep."""

    def __init__(self, client: distributed.Client, target: ClusterTarget) -> None:
        self.client = client
        self.target = target
        self.max_skew_ns = max_skew_ns_of(target.max_skew_ms)
        hosts = list_hosts(client, target.cluster)
        self.server: Host | None = None
        if target.server_host is not None:
            self.server = choose_server_host(hosts, target.server_host, target.cluster)
        self.clients = [h for h in hosts if self.server is None or h.address != self.server.address]
        if not self.clients:
            raise SetupError(
                f"the Dask cluster at {target.cluster} has no worker besides the server host's"
            )
        self.scheduler = str(client.scheduler_info()["address"])
        self.server_ip = (
            self.server.ip if self.server is not None else local_address_towards(self.scheduler)
        )
        clocks = measure_clocks(client, self.clients)
        self.skew = check_skew(self.clients, clocks, self.max_skew_ns)

    @property
    def topology(self) -> SweepTopology:
        return SweepTopology(
            mode="cluster",
            cluster=self.target.cluster,
            scheduler=self.scheduler,
            server_host=LOCAL_HOST if self.server is None else self.server.name,
            server_address=None if self.server is None else self.server.address,
            clients=tuple(
                ClientHost(h.name, h.address, self.target.processes) for h in self.clients
            ),
            skew_ms=round(self.skew.offset_ns / 1e6, 3),
            skew_uncertainty_ms=round(self.skew.uncertainty_ns / 1e6, 3),
        )

    def make_server(self, point: PointSpec, cpu: int | None, log_path: Path | None) -> Any:
        """The point's server on the server host, listening where the clients reach it."""
        on_this_machine = self.server is None
        request = ServerRequest(
            point.protocol, cpu, point.total_connections,
            # A path of this machine means nothing on another host.
            log_path if on_this_machine else None,
            tuple(point.server_args()), host=self.server_ip,
        )  # fmt: skip
        if self.server is None:
            return registry.get(point.impl).server(request)
        return RemoteServer(self.client, self.server, point.impl, request)

    def run_load(
        self, load: LoadConfig, json_path: Path, on_phase: Callable[[Phase], None]
    ) -> ChildRun:
        """One run's load over the client hosts; its result file written to
        ``json_path``; RunError naming a host that was lost or failed."""
        load = replace(load, processes=self.target.processes)
        result = run_on_hosts(self.client, self.target.cluster, self.clients, load,
                              self.max_skew_ns, on_phase)  # fmt: skip
        write_json_atomic(json_path, result.to_json())
        if result.failures:
            raise RunError("; ".join(result.failures))
        return ChildRun(result.exit_status, result.merged, "")


@contextlib.contextmanager
def open_cluster(target: ClusterTarget) -> Iterator[ClusterSession]:
    with connect(target.cluster) as client:
        yield ClusterSession(client, target)
