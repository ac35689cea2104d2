"""The scaling kinds: ``muxlab serve --workers N`` measured against worker count.

``herd``: for each backend, balance (``shared``, ``exclusive``, ``reuseport``) and worker
count, the harness opens connections in bursts of :data:`BURST` and resets them
(``SO_LINGER`` 0: no ``TIME_WAIT``, so a window never runs out of ephemeral ports) for the
window, at most ``max_connects`` of them, then reads the server's counters. Per cell:
the accept rate (connections accepted over the time until the last one was); worker
wake-ups per accepted connection, the workers' voluntary context switches from ``/proc``
(each is a sleep after a wake-up, whether or not the wait returned); and the wake-ups that
found nothing to accept per accepted connection (``accept_wakeups_empty`` over
``connections_accepted``, summed over workers). A shared listener wakes every waiter; with
``EPOLLEXCLUSIVE`` or ``SO_REUSEPORT`` about one; on top, every balance pays the wake-ups
of the connections themselves (accept, then the reset to read), so none is at 0. The
last count depends on the scheduler:
epoll re-checks a ready listener before it returns, so a woken worker that runs after
another took the connection sleeps again without returning, and accept never sees that
wake-up. On few CPUs it shows less than the herd costs; the chart says how many CPUs.
``exclusive`` on a backend that is not epoll is recorded as skipped, with the reason.

``cores``: for each backend and worker count (``reuseport``), the load generator's closed
loop; throughput from the load generator, server CPU per request from the counters (the
workers' CPU summed, over the requests the server read, warm-up included on both sides).

Records go to ``results.json`` under ``herd`` and ``cores`` (one per cell, by ``key``; a
resumed run measures only the missing ones); charts are drawn from there.
"""

from __future__ import annotations

import functools
import itertools
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from benchmarks.chart_helpers import finish
from benchmarks.experiments import ExperimentSpec, ScalingSpec, SweepPlan
from benchmarks.results import ResultsFile
from benchmarks.sweep import SweepConfig
from loadgen.child import LoadChildError, run_load_in_child
from loadgen.config import LoadConfig
from loadgen.phase_lines import Phase
from servers import registry
from servers.multiproc import exclusive_refusal
from servers.process import ServerProcess, ServerProcessError

Record = dict[str, Any]
# Connections opened before any is reset: a small burst the workers race to accept. Small,
# because a woken worker accepts a whole burst (up to ACCEPT_BATCH), so the herd is paid
# per burst, not per connection.
BURST = 4
# A spawned worker per interpreter start: on a loaded 2-CPU machine 4 of them took > 10 s.
READY_TIMEOUT_S = 60.0
SETTLE_S = 5.0  # how long the server may take to accept what the window connected
# Fixed message size of the cores experiment, in bytes (as the idle experiment's default).
CORES_MSG_BYTES = 1024
# How long one cores cell's load generator may run, start and report included, in seconds.
LOAD_DEADLINE_S = 120.0
_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff = 1, l_linger = 0}: close sends RST


def herd_key(impl: str, balance: str, workers: int) -> str:
    return f"herd/{impl}/{balance}/w{workers}"


def cores_key(impl: str, connections: int, workers: int) -> str:
    return f"cores/{impl}/c{connections}/w{workers}"


# -- herd ----------------------------------------------------------------------------------


def connect_bursts(address: tuple[str, int], window_s: float, max_connects: int) -> int:
    """Open and reset connections in bursts for ``window_s`` or ``max_connects``; how many
    were connected (every one completed its handshake, so the server has it to accept)."""
    made = 0
    deadline = time.monotonic() + window_s
    while made < max_connects and time.monotonic() < deadline:
        burst = [
            socket.create_connection(address, timeout=5)
            for _ in range(min(BURST, max_connects - made))
        ]
        for sock in burst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            sock.close()
        made += len(burst)
    return made


def wait_for_accepts(server: ServerProcess, before: int, wanted: int) -> dict[str, Any]:
    """Counters once the server has accepted ``wanted`` more connections, or after
    :data:`SETTLE_S` with whatever it has."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        counters = server.counters()
        if counters["connections_accepted"] - before >= wanted or time.monotonic() > deadline:
            return counters
        time.sleep(0.02)


def measure_herd(impl: str, balance: str, workers: int, spec: ScalingSpec) -> Record:
    """One herd cell: a fresh server, a warm-up window, then the measured one."""
    args = ["--workers", str(workers), "--balance", balance]
    with ServerProcess(impl, "echo", extra_args=args, ready_timeout_s=READY_TIMEOUT_S) as server:
        warm = connect_bursts(server.address, spec.warmup_s, spec.max_connects)
        # The warm-up's connections accepted before the window opens, or they count in it.
        before = wait_for_accepts(server, 0, warm)
        pids = [w.get("pid", server.pid) for w in workers_of(before)]
        switches_before = voluntary_switches(pids)
        start_ns = time.perf_counter_ns()
        made = connect_bursts(server.address, spec.window_s, spec.max_connects)
        # Read before polling the counters below: every poll wakes every worker once.
        switches = voluntary_switches(pids) - switches_before
        after = wait_for_accepts(server, before["connections_accepted"], made)
        elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
    accepted = after["connections_accepted"] - before["connections_accepted"]
    empty = after["accept_wakeups_empty"] - before["accept_wakeups_empty"]
    per_worker = [
        a["connections_accepted"] - b["connections_accepted"]
        for a, b in zip(workers_of(after), workers_of(before), strict=True)
    ]
    return {
        "connections_made": made,
        "accepted": accepted,
        "accepted_per_worker": per_worker,
        "accept_rate_per_s": accepted / elapsed_s,
        "empty_wakeups": empty,
        "empty_wakeups_per_accept": empty / accepted if accepted else None,
        "worker_wakeups": switches,
        "worker_wakeups_per_accept": switches / accepted if accepted else None,
        "wait_calls_per_accept": (after["wait_calls"] - before["wait_calls"]) / accepted
        if accepted
        else None,
        "elapsed_s": elapsed_s,
    }


def voluntary_switches(pids: list[int]) -> int:
    """Times these processes went to sleep, summed (``proc(5)``,
    ``voluntary_ctxt_switches``): one per wake-up, including the ones the kernel withdraws
    before the process returns from its wait (epoll re-checks the listener and sleeps
    again when another worker took the connection), which no user-space counter sees."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def workers_of(counters: dict[str, Any]) -> list[dict[str, Any]]:
    """Each worker's snapshot; a one-process server is its own only worker."""
    workers: list[dict[str, Any]] = counters.get("workers", [counters])
    return workers


def run_herd(results: ResultsFile, experiment: ExperimentSpec) -> None:
    spec = experiment.scaling or ScalingSpec()
    for impl, balance, workers in itertools.product(experiment.impls, spec.balances, spec.workers):
        key = herd_key(impl, balance, workers)
        cell = scaling_cell(experiment, key, impl=impl, balance=balance, workers=workers)
        skip = exclusive_refusal(impl) if balance == "exclusive" else None
        measure = functools.partial(measure_herd, impl, balance, workers, spec)
        record(results, "herd", cell, skip, measure)


# -- cores ---------------------------------------------------------------------------------


def measure_cores(
    impl: str, connections: int, workers: int, spec: ScalingSpec, config: SweepConfig
) -> Record:
    """One cores cell: a fresh server with ``workers`` reuseport workers under the load
    generator's closed loop."""
    args = ["--workers", str(workers), "--balance", "reuseport"]
    with (
        ServerProcess(impl, "echo", extra_args=args, ready_timeout_s=READY_TIMEOUT_S) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        load = LoadConfig(port=server.port, host=server.address[0], connections=connections,
                          duration_s=spec.window_s, warmup_s=spec.warmup_s,
                          size_bytes=CORES_MSG_BYTES, cpus=config.client_cpus)  # fmt: skip
        before = server.counters()
        child = run_load_in_child(load, Path(tmp) / "load.json", _no_phase,
                                  deadline_s=LOAD_DEADLINE_S, command=config.loadgen)  # fmt: skip
        after = server.counters()
    if child.status != 0 or child.result is None:
        raise ServerProcessError(f"load generator exit {child.status}: {child.stderr_tail}")
    cpu_s = sum(after[k] - before[k] for k in ("cpu_user_s", "cpu_system_s"))
    requests = (after["bytes_in"] - before["bytes_in"]) / CORES_MSG_BYTES
    return {
        "rps": child.result.rps,
        "client_bound": child.result.client_bound,
        "server_cpu_s": cpu_s,
        "server_cpu_per_request_us": cpu_s / requests * 1e6 if requests else None,
        "load_errors": dict(child.result.errors),
    }


def _no_phase(phase: Phase) -> None:
    """The cores cell reads the server's counters around the whole run (warm-up included,
    on both sides), not at the load generator's phase lines."""


def run_cores(results: ResultsFile, experiment: ExperimentSpec, config: SweepConfig) -> None:
    spec = experiment.scaling or ScalingSpec()
    for impl, connections, workers in itertools.product(
        experiment.impls, experiment.connections, spec.workers
    ):
        key = cores_key(impl, connections, workers)
        cell = scaling_cell(experiment, key, impl=impl, connections=connections, workers=workers)
        measure = functools.partial(measure_cores, impl, connections, workers, spec, config)
        record(results, "cores", cell, None, measure)


# -- both ----------------------------------------------------------------------------------


def scaling_cell(experiment: ExperimentSpec, key: str, **varies: Any) -> Record:
    """A cell's identity in the results file: its key, its experiment, what varies."""
    return {"key": key, "experiment": experiment.name, **varies}


def record(
    results: ResultsFile,
    kind: str,
    cell: Record,
    skip_reason: str | None,
    measure: Callable[[], Record],
) -> None:
    """Measure one cell unless it is recorded already, and save it whole."""
    records: list[Record] = results.data.setdefault(kind, [])
    if any(r["key"] == cell["key"] for r in records):
        return
    if skip_reason is not None:
        records.append({**cell, "status": "skipped", "reason": skip_reason})
    else:
        try:
            records.append({**cell, "status": "done", "reason": None, **measure()})
        except (ServerProcessError, OSError, LoadChildError, subprocess.TimeoutExpired) as exc:
            records.append({**cell, "status": "failed", "reason": str(exc)[:300]})
    results.save()


def run_scaling(results: ResultsFile, plan: SweepPlan, config: SweepConfig) -> None:
    """Measure every herd and cores experiment of the plan, in plan order."""
    for experiment in plan.experiments:
        if experiment.kind == "herd":
            run_herd(results, experiment)
        elif experiment.kind == "cores":
            run_cores(results, experiment, config)


# -- charts --------------------------------------------------------------------------------


def cpus_line(data: dict[str, Any]) -> str:
    """The machine the run had: scaling past its CPUs measures the scheduler, not the server."""
    env = data["environment"]
    available = env.get("cpus_available") or []
    return (
        f"run {data['run_id']}: {env.get('cpus')} CPUs ({len(available)} available to the "
        f"run), {env.get('cpu_model')}, Linux {env.get('kernel')}; the load comes from the "
        "same machine"
    )


def _done(data: dict[str, Any], kind: str, name: str) -> list[Record]:
    return [r for r in data.get(kind, []) if r["experiment"] == name and r["status"] == "done"]


def chart_herd(data: dict[str, Any], name: str, out_dir: Path) -> list[Path]:
    records = _done(data, "herd", name)
    if not records:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    panels = (
        ("accept_rate_per_s", "connections accepted per second", "accept rate"),
        ("worker_wakeups_per_accept", "worker wake-ups per accepted connection",
         "wake-ups (voluntary context switches)"),
        ("empty_wakeups_per_accept", "wake-ups that found nothing to accept, per accept",
         "wake-ups seen to be wasted"),
    )  # fmt: skip
    styles = {"shared": "-", "exclusive": "--", "reuseport": ":"}
    for impl, balance in sorted({(r["impl"], r["balance"]) for r in records}):
        rows = sorted(
            (r for r in records if (r["impl"], r["balance"]) == (impl, balance)),
            key=lambda r: r["workers"],
        )
        workers = [r["workers"] for r in rows]
        look = registry.style_of(impl)
        style = {"color": look.colour, "linestyle": styles.get(balance, "-"), "marker": look.marker}
        for ax, (field, _, _) in zip(axes, panels, strict=True):
            ax.plot(workers, [r.get(field) or 0 for r in rows], label=f"{impl} {balance}", **style)
    for ax, (_, ylabel, title) in zip(axes, panels, strict=True):
        ax.set(xlabel="workers", ylabel=ylabel, title=title)
        ax.grid(True, alpha=0.3)
        ax.set_xticks(sorted({r["workers"] for r in records}))
    axes[0].legend(fontsize=8)
    cpus = data["environment"].get("cpus")
    caption = (
        f"{cpus_line(data)}. Connections opened in bursts of {BURST} and reset. A shared "
        "listener wakes every worker per connection; EPOLLEXCLUSIVE wakes one or more; "
        "SO_REUSEPORT queues each connection on one worker's own listener. Middle: every "
        "time a worker slept again after a wake-up, from /proc (proc(5)). Right: only the "
        "wake-ups that reached accept(2); epoll re-checks the listener before returning, "
        "so a worker that runs late sleeps again unseen, and fewer CPUs show less there."
    )
    return finish(fig, f"Thundering herd on {cpus} CPUs: {name}", caption, out_dir, name)


def chart_cores(data: dict[str, Any], name: str, out_dir: Path) -> list[Path]:
    records = _done(data, "cores", name)
    if not records:
        return []
    fig, (rps_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.8))
    for impl, connections in sorted({(r["impl"], r["connections"]) for r in records}):
        rows = sorted(
            (r for r in records if (r["impl"], r["connections"]) == (impl, connections)),
            key=lambda r: r["workers"],
        )
        workers = [r["workers"] for r in rows]
        look = registry.style_of(impl)
        style = {"color": look.colour, "marker": look.marker}
        rps_ax.plot(
            workers, [r["rps"] for r in rows], label=f"{impl}, {connections} conn.", **style
        )
        cpu_ax.plot(workers, [r["server_cpu_per_request_us"] or 0 for r in rows], **style)
    cpus = data["environment"].get("cpus")
    rps_ax.set(xlabel="workers", ylabel="requests per second", title="throughput")
    cpu_ax.set(xlabel="workers", ylabel="server CPU per request (us)", title="server CPU")
    for ax in (rps_ax, cpu_ax):
        ax.grid(True, alpha=0.3)
        ax.set_xticks(sorted({r["workers"] for r in records}))
    rps_ax.legend(fontsize=8)
    caption = (
        f"{cpus_line(data)}, so past {cpus} server and client processes compete for the "
        f"same CPUs. Echo, {CORES_MSG_BYTES} B messages, reuseport workers, closed loop."
    )
    return finish(fig, f"Workers against cores on {cpus} CPUs: {name}", caption, out_dir, name)


SCALING_CHARTS: dict[str, Callable[[dict[str, Any], str, Path], list[Path]]] = {
    "herd": chart_herd,
    "cores": chart_cores,
}
