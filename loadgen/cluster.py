"""``muxlab load --cluster``: the load generator's processes spread over several hosts, on Dask.

Some facts about a benchmark from several client hosts:

- A host's clock is its own. ``CLOCK_MONOTONIC`` has an arbitrary origin per machine
  (``clock_gettime(2)``), so hosts can only agree on a moment in ``CLOCK_REALTIME``, which
  NTP or chrony keep close to each other but never equal. We measure how far apart they
  are: the coordinator asks each host for its wall clock several times through Dask
  (``Client.run``) and keeps the probe with the shortest round trip; the host's offset is
  its reading minus the midpoint of the probe, within half the round trip (RFC 5905's
  bound). The skew is the spread of those offsets; over ``--max-skew-ms`` the run is
  refused, because the hosts' windows would not overlap as the result claims.
- Ramping connections takes a different time on each host. So each host runs an ordinary
  load run (:func:`loadgen.runner.run_load`) on its share of the connections, and only once
  its connections are open does it tell the coordinator "ready" (a Dask ``Queue``) and wait
  for the start (a Dask ``Variable``). When every host is ready, the coordinator publishes
  one wall-clock start a lead time ahead; each host converts it to its own monotonic clock
  and starts its warm-up then, so every window opens at the same moment, to within the skew.
- A host can vanish: its Dask worker killed, its machine down. Dask would keep a task pinned
  to a departed worker waiting for it forever, so the coordinator never waits on Dask
  alone: it checks that each host's worker is still in the cluster, and every wait has a
  deadline derived from the run's own durations. A lost host is reported by name; the
  others' results are kept.

The load generator is reached through one function, :func:`run_share`, which builds on
``run_load(config, start_gate=...)``; merging is in ``loadgen.cluster_result``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import multiprocessing
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import distributed

from loadgen.cluster_result import (
    HOST_FAILED,
    HOST_LOST,
    ClusterResult,
    HostClock,
    HostOutcome,
    Topology,
    merge_host_results,
)
from loadgen.config import LoadConfig, validate
from loadgen.phase_lines import Phase
from loadgen.result import LoadResult
from loadgen.runner import REPORT_ALLOWANCE_S, SPAWN_ALLOWANCE_S, PhaseCallback, run_load
from loadgen.schedule import Phases, split_evenly
from muxlab.environment import environment
from muxlab.errors import MuxlabError, RunError, SetupError, UsageError

SSH_PREFIX = "ssh:"
# Probes per host for its clock offset; the one with the shortest round trip is kept.
CLOCK_PROBES = 8
# The start is published this far ahead (at least; ten round trips when they are longer),
# so that every host has read it before the moment it names.
MIN_START_LEAD_NS = 500_000_000
# Connecting to the scheduler, and Dask handing a task to a worker, on a loaded machine.
CONNECT_TIMEOUT_S = 10.0
DASK_ALLOWANCE_S = 15.0
POLL_S = 0.25
# Published instead of a start time when the coordinator calls the run off.
CALLED_OFF = -1
DAEMON_HINT = (
    "its Dask worker is a daemonic process (a Nanny's child) and may not start the load "
    "generator's processes: start it with 'dask worker --no-nanny', or with "
    "DASK_DISTRIBUTED__WORKER__DAEMON=False"
)


class CalledOff(RuntimeError):
    """The coordinator stopped the run before its start (another host failed)."""


@dataclass(frozen=True)
class Host:
    """One Dask worker, which runs one host's share of the load."""

    name: str
    address: str
    # The worker's own IP address, as the scheduler sees it.
    ip: str = ""


def parse_cluster(text: str) -> tuple[str, ...] | str:
    """``ssh:H1,H2`` -> the host names; a scheduler address (``tcp://host:port``) as is."""
    if text.startswith(SSH_PREFIX):
        hosts = tuple(h.strip() for h in text[len(SSH_PREFIX) :].split(","))
        if not hosts or not all(hosts):
            raise UsageError(f"bad --cluster {text!r}: expected ssh:HOST1,HOST2,...")
        return hosts
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or ":" not in rest:
        raise UsageError(
            f"bad --cluster {text!r}: expected a Dask scheduler address (tcp://HOST:PORT) "
            "or ssh:HOST1,HOST2,..."
        )
    return text


@contextlib.contextmanager
def connect(cluster: str) -> Iterator[distributed.Client]:
    """A client of the scheduler at ``cluster``, or of a new SSH cluster (scheduler and a
    worker on the first host, a worker on each other one), closed on exit."""
    target = parse_cluster(cluster)
    with contextlib.ExitStack() as stack:
        address: Any = target
        if isinstance(target, tuple):
            # Workers without a Nanny: a Nanny's worker is daemonic and could not start the
            # load generator's processes, and a host that dies must stay dead, not restart.
            ssh = distributed.SSHCluster(
                hosts=[target[0], *target],
                worker_class="distributed.Worker",
                worker_options={"nthreads": 1},
                remote_python=sys.executable,
            )
            address = stack.enter_context(ssh)
        try:
            client = distributed.Client(
                address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise SetupError(f"cannot reach the Dask scheduler at {cluster}: {exc}") from None
        stack.enter_context(client)
        yield client


def live_workers(client: distributed.Client) -> dict[str, dict[str, Any]]:
    """The scheduler's worker table, asked afresh. Not ``Client.scheduler_info()``: it
    returns the client's cached identity, which the client's own periodic refresh
    (``n_workers=0``) replaces with an empty worker table at any moment, so a host would
    look lost when it is not."""
    scheduler = client.scheduler
    if scheduler is None:  # only before connecting or after closing
        raise SetupError("the Dask client has no scheduler connection")
    identity: dict[str, Any] = client.sync(scheduler.identity, n_workers=-1)
    workers: dict[str, dict[str, Any]] = identity["workers"]
    return workers


def list_hosts(client: distributed.Client, cluster: str) -> list[Host]:
    workers = live_workers(client)
    if not workers:
        raise SetupError(f"the Dask cluster at {cluster} has no workers")
    hosts = []
    for address, info in sorted(workers.items()):
        name = info.get("name")
        # Unnamed workers (and SSHCluster's, numbered 0, 1, ...) are named by their host.
        if not isinstance(name, str) or not name or name == address:
            name = str(info.get("host", address))
        hosts.append(Host(name, address, str(info.get("host", ""))))
    # A name identifies a host in the ready queue and in every message: two workers on one
    # machine get their address as their name.
    counts = Counter(h.name for h in hosts)
    return [replace(h, name=h.address) if counts[h.name] > 1 else h for h in hosts]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable_target(config: LoadConfig, hosts: Sequence[Host]) -> None:
    """A loopback ``--host`` names each client host itself, not the server, unless every
    client host is this machine (workers on loopback)."""
    remote = [h.name for h in hosts if not is_loopback(h.ip)]
    if is_loopback(config.host) and remote:
        raise UsageError(
            f"--host {config.host} is loopback, which on host(s) {', '.join(remote)} is that "
            "host itself: with --cluster give the server's address as the client hosts reach it"
        )


def measure_clocks(client: distributed.Client, hosts: Sequence[Host]) -> dict[str, HostClock]:
    """Each host's wall clock against ours, from its best of CLOCK_PROBES probes."""
    clocks: dict[str, HostClock] = {}
    for host in hosts:
        best: HostClock | None = None
        for _ in range(CLOCK_PROBES):
            sent_ns = time.time_ns()
            host_ns = client.run(time.time_ns, workers=[host.address])[host.address]
            received_ns = time.time_ns()
            probe = HostClock(
                offset_ns=host_ns - (sent_ns + received_ns) // 2,
                uncertainty_ns=(received_ns - sent_ns) // 2,
            )
            if best is None or probe.uncertainty_ns < best.uncertainty_ns:
                best = probe
        assert best is not None
        clocks[host.address] = best
    return clocks


def check_skew(hosts: Sequence[Host], clocks: dict[str, HostClock], max_skew_ns: int) -> HostClock:
    """The spread of the hosts' clock offsets and its uncertainty, in ns. SetupError when
    the spread exceeds ``max_skew_ns`` by more than the probes can be wrong by: a skew
    within the probes' own uncertainty is not evidence of unsynchronised clocks."""
    ordered = sorted(hosts, key=lambda h: clocks[h.address].offset_ns)
    early, late = clocks[ordered[0].address], clocks[ordered[-1].address]
    spread = HostClock(
        offset_ns=late.offset_ns - early.offset_ns,
        uncertainty_ns=late.uncertainty_ns + early.uncertainty_ns,
    )
    if spread.offset_ns - spread.uncertainty_ns > max_skew_ns:
        raise SetupError(
            f"clocks of hosts {ordered[-1].name} and {ordered[0].name} differ by "
            f"{spread.offset_ns / 1e6:.3f} +- {spread.uncertainty_ns / 1e6:.3f} ms, over "
            f"--max-skew-ms {max_skew_ns / 1e6:g}: synchronise them (chrony or NTP)"
        )
    return spread


def host_shares(config: LoadConfig, hosts: int) -> list[LoadConfig]:
    """Each host's part of the run: connections split evenly, rates in proportion."""
    if config.connections < hosts:
        raise UsageError(
            f"--connections {config.connections} cannot be split over {hosts} hosts: "
            "each needs at least one"
        )
    shares = []
    for active, idle in zip(
        split_evenly(config.connections, hosts), split_evenly(config.idle, hosts), strict=True
    ):
        rate = None if config.rate_rps is None else config.rate_rps * active / config.connections
        connect_rate = config.connect_rate_cps * (active + idle) / config.total_connections
        shares.append(
            replace(
                config, connections=active, idle=idle, rate_rps=rate, connect_rate_cps=connect_rate
            )
        )
    return shares


def ready_allowance_s(config: LoadConfig) -> float:
    """How long a host may take to be ready: start its processes, ramp, and be scheduled."""
    ramp_s = config.total_connections / config.connect_rate_cps
    return SPAWN_ALLOWANCE_S + ramp_s + config.timeout_s + DASK_ALLOWANCE_S


def _names(run_id: str) -> tuple[str, str]:
    return f"{run_id}-ready", f"{run_id}-start"


def run_share(share: LoadConfig, run_id: str, name: str, wait_s: float) -> LoadResult:
    """On a host (a Dask task): run its share, warm-up starting at the agreed moment."""
    if multiprocessing.current_process().daemon:
        raise SetupError(DAEMON_HINT)
    ready_name, start_name = _names(run_id)

    def start_gate() -> int:
        distributed.Queue(ready_name).put(name)
        start_wall_ns = int(distributed.Variable(start_name).get(timeout=wait_s))
        if start_wall_ns == CALLED_OFF:
            raise CalledOff("called off by the coordinator")
        return time.monotonic_ns() + (start_wall_ns - time.time_ns())

    return run_load(share, start_gate=start_gate)


class _Run:
    """The coordinator's side of one run: a task per host, readiness, start, collection."""

    def __init__(self, client: distributed.Client, hosts: Sequence[Host], config: LoadConfig):
        self.client = client
        self.hosts = {h.address: h for h in hosts}
        self.config = config
        self.shares = dict(zip(self.hosts, host_shares(config, len(hosts)), strict=True))
        self.run_id = f"muxlab-load-{uuid.uuid4().hex}"
        ready_name, start_name = _names(self.run_id)
        self.ready_queue = distributed.Queue(ready_name, client=client)
        self.start = distributed.Variable(start_name, client=client)
        self.futures: dict[str, distributed.Future[LoadResult]] = {}

    def submit(self) -> None:
        wait_s = 2 * ready_allowance_s(self.config)
        for address, host in self.hosts.items():
            self.futures[address] = self.client.submit(
                run_share, self.shares[address], self.run_id, host.name, wait_s,
                key=f"{self.run_id}-{host.name}", workers=[address],
                allow_other_workers=False, pure=False, retries=0,
            )  # fmt: skip

    def call_off(self) -> None:
        # Best effort, on the way out of a failed run: a scheduler that is gone too must not
        # hide the error being reported; hosts that never read it time out on their own.
        with contextlib.suppress(Exception):
            self.start.set(CALLED_OFF)

    def gone(self, addresses: Sequence[str]) -> list[str]:
        alive = live_workers(self.client)
        return [a for a in addresses if a not in alive]

    def failure(self, address: str) -> BaseException | None:
        future = self.futures[address]
        if future.status != "error":
            return None
        exc: BaseException = future.exception()
        return exc

    def wait_ready(self, deadline_ns: int) -> None:
        """Until every host is ready; a host that failed, left or is late ends the run."""
        ready: set[str] = set()
        while len(ready) < len(self.hosts):
            for address, host in self.hosts.items():
                exc = self.failure(address)
                if exc is not None:
                    self._abort(host, exc)
            for address in self.gone(list(self.hosts)):
                self.call_off()
                raise RunError(f"host {self.hosts[address].name} ({address}): lost before the "
                               "start: its Dask worker left the cluster")  # fmt: skip
            if time.monotonic_ns() > deadline_ns:
                late = ", ".join(h.name for h in self.hosts.values() if h.name not in ready)
                self.call_off()
                raise RunError(f"host(s) {late} not ready by the start deadline")
            with contextlib.suppress(TimeoutError):
                ready.add(str(self.ready_queue.get(timeout=POLL_S)))

    def _abort(self, host: Host, exc: BaseException) -> None:
        self.call_off()
        message = f"host {host.name} ({host.address}): {exc}"
        if isinstance(exc, MuxlabError):
            error = type(exc)(message)
            raise error from None
        raise RunError(message) from None

    def publish_start(self, lead_ns: int) -> int:
        start_wall_ns = time.time_ns() + lead_ns
        self.start.set(start_wall_ns)
        return start_wall_ns

    def collect(
        self, deadline_ns: int, phases: Phases, on_phase: PhaseCallback | None
    ) -> dict[str, tuple[LoadResult | None, str | None, str]]:
        """Each host's result, or why there is none; never waits past ``deadline_ns``.
        ``on_phase`` is called as the hosts' window opens and closes (``phases``, in our
        monotonic clock), as a single host's run calls it."""
        outcomes: dict[str, tuple[LoadResult | None, str | None, str]] = {}
        pending = dict(self.futures)
        edges: list[tuple[Phase, int]] = [
            ("measure", phases.measure_start_ns),
            ("end", phases.end_ns),
        ]
        while pending:
            # Future.status follows the scheduler's messages; a few polls a second is
            # all the promptness a run of seconds needs; a phase edge wakes us on time.
            next_edge_ns = edges[0][1] if edges else deadline_ns
            time.sleep(max(0.0, min(POLL_S, (next_edge_ns - time.monotonic_ns()) / 1e9)))
            while edges and time.monotonic_ns() >= edges[0][1]:
                phase, _ = edges.pop(0)
                if on_phase is not None:
                    on_phase(phase)
            for address, future in list(pending.items()):
                if future.status == "finished":
                    outcomes[address] = (future.result(), None, "")
                elif future.status in ("error", "cancelled"):
                    outcomes[address] = (None, f"failed: {self.failure(address)}", HOST_FAILED)
                else:
                    continue
                del pending[address]
            for address in self.gone(list(pending)):
                outcomes[address] = (None, "lost: its Dask worker left mid-run", HOST_LOST)
                pending.pop(address).cancel()
            if pending and time.monotonic_ns() > deadline_ns:
                for address, future in pending.items():
                    outcomes[address] = (None, "lost: no report by the deadline", HOST_LOST)
                    future.cancel()
                pending.clear()
        return outcomes


def max_skew_ns_of(max_skew_ms: float) -> int:
    """``--max-skew-ms`` in ns; :class:`UsageError` unless positive."""
    if max_skew_ms <= 0:
        raise UsageError(f"--max-skew-ms must be > 0, not {max_skew_ms}")
    return round(max_skew_ms * 1e6)


def run_cluster_load(
    config: LoadConfig, cluster: str, max_skew_ms: float, on_phase: PhaseCallback | None = None
) -> ClusterResult:
    """One load run over every worker of the Dask cluster ``cluster`` (see module doc);
    ``on_phase("measure")``/``on_phase("end")`` as for :func:`loadgen.runner.run_load`."""
    validate(replace(config, cpus=()))  # before connecting: a usage error costs no cluster
    max_skew_ns = max_skew_ns_of(max_skew_ms)
    with connect(cluster) as client:
        hosts = list_hosts(client, cluster)
        return run_on_hosts(client, cluster, hosts, config, max_skew_ns, on_phase)


def run_on_hosts(
    client: distributed.Client,
    cluster: str,
    hosts: Sequence[Host],
    config: LoadConfig,
    max_skew_ns: int,
    on_phase: PhaseCallback | None = None,
) -> ClusterResult:
    """One load run over ``hosts`` (workers of ``client``'s cluster), as
    :func:`run_cluster_load`; a sweep calls it once per run on the client it keeps open."""
    # --cpus name CPUs of the client hosts, not of this machine: each host checks its own.
    validate(replace(config, cpus=()))
    check_reachable_target(config, hosts)
    clocks = measure_clocks(client, hosts)
    skew = check_skew(hosts, clocks, max_skew_ns)
    run = _Run(client, hosts, config)
    run.submit()
    try:
        run.wait_ready(time.monotonic_ns() + round(ready_allowance_s(config) * 1e9))
    except KeyboardInterrupt:
        run.call_off()
        raise
    lead_ns = max(MIN_START_LEAD_NS, 20 * max(c.uncertainty_ns for c in clocks.values()))
    start_wall_ns = run.publish_start(lead_ns)
    # The agreed start in our own monotonic clock, for the phase lines and deadlines.
    phases = Phases.starting_at(
        time.monotonic_ns() + start_wall_ns - time.time_ns(), config.warmup_s, config.duration_s
    )
    grace_s = config.timeout_s + REPORT_ALLOWANCE_S + DASK_ALLOWANCE_S
    deadline_ns = phases.end_ns + round(grace_s * 1e9)
    try:
        outcomes = run.collect(deadline_ns, phases, on_phase)
    except BaseException:
        # on_phase failed (a sweep's server snapshot) or Ctrl-C: the hosts' tasks are
        # released, not left holding their workers' one thread for the next run.
        with contextlib.suppress(Exception):
            client.cancel(list(run.futures.values()))
        raise
    host_outcomes = tuple(
        HostOutcome(
            name=host.name,
            address=address,
            share=run.shares[address],
            clock=clocks[address],
            result=outcomes[address][0],
            failure=outcomes[address][1],
            error_kind=outcomes[address][2] or None,
        )
        for address, host in run.hosts.items()
    )
    merged = merge_host_results(config, environment(), host_outcomes)
    topology = Topology(cluster, skew, max_skew_ns, lead_ns)
    return ClusterResult(merged, host_outcomes, topology)
