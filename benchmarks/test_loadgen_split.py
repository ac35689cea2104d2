"""Does the split of ``loadgen/worker.py`` cost client CPU? Old and new, side by side.

The split (typed pipe messages, a ramp, a window and an open-loop module, one
send-or-queue path that the closed-loop hot loops now call instead of inlining it) must
cost no more than 2% client CPU per request (issue 10, item 3). This benchmark measures
both trees in one run, against one server:

- the old tree is the commit before the split (:data:`BASE_COMMIT`, or
  ``MUXLAB_SPLIT_BASE``), extracted with ``git archive`` at benchmark time: nothing of it
  is kept in this tree;
- each run is ``run_load`` from that tree in a fresh interpreter (its workers are spawned
  from it, so they import that tree too), one worker pinned to the client CPU, closed
  loop, against muxlab's epoll-lt server pinned to the other CPU;
- rounds alternate the order (old-new, new-old, ...), so drift of a shared machine lands
  on both alike;
- the figure is client CPU time per request (the worker's busy fraction times the window,
  over the requests answered in it), and the result is the ratio new/old of the medians
  with its bootstrap 95% interval (``benchmarks.stats``); ``extra_info`` carries both
  samples, the ratio, the interval and the verdict against the 1.02 goal.

Usage: ``pytest --benchmark-only benchmarks/test_loadgen_split.py``; more rounds with
``MUXLAB_SPLIT_ROUNDS=9``. The time column is the wall time of all rounds, not the result.
A noisy machine gives a wide interval (verdict ``undecided``); nothing is asserted about
it, only that every run answered requests without errors.

``test_send_path`` isolates the one change on the closed loops' per-request path (a call
to ``Worker.send_or_queue`` where the block was inlined): its two rows, in one table,
give the nanoseconds per send of each, to set against the client CPU per request.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.stats import ratio_of_medians, ratio_text, verdict
from loadgen.connection import Conn
from loadgen.messages import WorkerSpec
from loadgen.worker import Worker
from servers.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
# The last commit before the split (main at 34fb783, 2026-11-27).
BASE_COMMIT = "34fb783df00b3d5e93da5351c59f9cc27ee29cae"
GOAL = 1.02  # new / old client CPU per request, at most
ROUNDS = int(os.environ.get("MUXLAB_SPLIT_ROUNDS", "3"))
DURATION_S = 1.5
WARMUP_S = 0.5
CONNECTIONS = 50
ECHO_BYTES = 64

# Run in the tree under test: ``run_load`` there, its result as one JSON line.
RUN = """
import json, sys
import loadgen
from loadgen import LoadConfig, run_load
port, protocol, cpu, duration_s, warmup_s, connections, size = sys.argv[1:]
r = run_load(LoadConfig(port=int(port), protocol=protocol, connections=int(connections),
             processes=1, cpus=(int(cpu),), duration_s=float(duration_s),
             warmup_s=float(warmup_s), size_bytes=int(size)))
print(json.dumps({"cpu_s": r.client_cpu[0] * r.duration_s, "requests": r.requests_ok,
                  "errors": r.errors, "rps": r.rps, "module": loadgen.__file__}))
"""


@dataclass(frozen=True)
class Run:
    cpu_us_per_request: float
    rps: float


def cpus() -> tuple[int, int]:
    """(server CPU, client CPU): two different CPUs when there are two."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


@pytest.fixture(scope="module")
def old_tree() -> Iterator[Path]:
    """The pre-split ``loadgen`` and ``muxlab`` packages, extracted from git."""
    ref = os.environ.get("MUXLAB_SPLIT_BASE", BASE_COMMIT)
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this project's history to extract the pre-split tree")
    archive = subprocess.run([git, "-C", str(ROOT), "archive", ref, "loadgen", "muxlab"],
                             capture_output=True, check=False)  # fmt: skip
    if archive.returncode != 0:
        pytest.skip(f"commit {ref} is not in this clone: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory(prefix="muxlab-presplit-") as tmp:
        with tempfile.TemporaryFile() as tar_bytes:
            tar_bytes.write(archive.stdout)
            tar_bytes.seek(0)
            with tarfile.open(fileobj=tar_bytes) as tar:
                tar.extractall(tmp, filter="data")
        yield Path(tmp)


def run_tree(tree: Path, port: int, protocol: str, client_cpu: int) -> Run:
    # Started in the tree's own directory, with only that tree on PYTHONPATH: "-c" puts
    # the working directory first on sys.path, and spawned workers inherit sys.path.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", RUN, str(port), protocol, str(client_cpu), str(DURATION_S),
            str(WARMUP_S), str(CONNECTIONS), str(ECHO_BYTES)]  # fmt: skip
    proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True,
                          timeout=DURATION_S + WARMUP_S + 120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(data["module"]).is_relative_to(tree)  # that tree's code ran, not another
    assert data["errors"] == {}
    assert data["requests"] > 0
    return Run(data["cpu_s"] / data["requests"] * 1e6, data["rps"])


@pytest.mark.parametrize("protocol", ["echo", "http"])
def test_split_client_cpu_per_request(
    benchmark: pytest.FixtureRequest, old_tree: Path, protocol: str
) -> None:
    server_cpu, client_cpu = cpus()
    old: list[Run] = []
    new: list[Run] = []

    def interleaved() -> None:
        with ServerProcess("epoll-lt", protocol, cpu=server_cpu) as server:
            for round_ in range(ROUNDS):
                order = [(old, old_tree), (new, ROOT)]
                for runs, tree in order if round_ % 2 == 0 else reversed(order):
                    runs.append(run_tree(tree, server.port, protocol, client_cpu))

    benchmark.group = "loadgen split: client CPU per request, new / old"  # type: ignore[attr-defined]
    benchmark.pedantic(interleaved, rounds=1, iterations=1)  # type: ignore[attr-defined]
    assert len(old) == len(new) == ROUNDS
    old_us = [r.cpu_us_per_request for r in old]
    new_us = [r.cpu_us_per_request for r in new]
    ratio = ratio_of_medians(new_us, old_us)
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        protocol=protocol,
        connections=CONNECTIONS,
        rounds=ROUNDS,
        base_commit=os.environ.get("MUXLAB_SPLIT_BASE", BASE_COMMIT),
        old_cpu_us_per_request=[round(v, 3) for v in old_us],
        new_cpu_us_per_request=[round(v, 3) for v in new_us],
        old_rps=[round(r.rps) for r in old],
        new_rps=[round(r.rps) for r in new],
        ratio_new_over_old=ratio_text(ratio, 3),
        goal=f"<= {GOAL}",
        verdict=verdict(ratio, "<=", GOAL),
    )


# -- the one hot-path change, alone: a call to Worker.send_or_queue instead of inline code --

SENDS = 1000


def _inline_sends(c: Conn, w: Worker, payload: bytes) -> None:
    # The send-or-queue block as the hot loops inlined it before the split.
    queue_output = w.queue_output
    for _ in range(SENDS):
        if c.out:
            queue_output(c, payload)
        else:
            try:
                written = c.send(payload)
            except OSError:
                return
            if written != len(payload):
                queue_output(c, payload, written)


def _called_sends(c: Conn, w: Worker, payload: bytes) -> None:
    send_or_queue = w.send_or_queue
    for _ in range(SENDS):
        if not send_or_queue(c, payload):
            return


@pytest.mark.parametrize("variant", ["inline", "send_or_queue"])
def test_send_path(benchmark: pytest.FixtureRequest, variant: str) -> None:
    """``SENDS`` sends of one 64-byte request on a socket pair, the peer drained between
    rounds: what the split changed per request in the closed loops, and nothing else."""
    spec = WorkerSpec(index=0, family=socket.AF_UNIX, sockaddr=(), protocol="echo",
                      request=b"", first_cid=0, active=1, idle=0, all_active=1,
                      size_bytes=ECHO_BYTES, pipeline=1, rate_rps=None, connect_rate_cps=1.0,
                      timeout_s=1.0, cpu=None, fds_needed=0, progress=False)  # fmt: skip
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ours.setblocking(False)
    worker = Worker(spec, ctl=None)  # type: ignore[arg-type]
    conn = Conn(ours, cid=0)
    worker.conns[conn.fd] = conn
    worker.ep.register(conn.fd, select.EPOLLIN)
    payload = bytes(ECHO_BYTES)
    sends = _inline_sends if variant == "inline" else _called_sends

    def drain() -> tuple[tuple[Conn, Worker, bytes], dict[str, object]]:
        theirs.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while theirs.recv(1 << 20):
                pass
        return (conn, worker, payload), {}

    try:
        benchmark.group = "loadgen split: one send path, 1000 sends of 64 B"  # type: ignore[attr-defined]
        benchmark.pedantic(sends, setup=drain, rounds=200, iterations=1)  # type: ignore[attr-defined]
        assert not conn.out and worker.errors == {}  # every byte was taken by the kernel
        drain()
        conn.sock.send(b"x")
        assert theirs.recv(16) == b"x"
        median_s = benchmark.stats.stats.median  # type: ignore[attr-defined]
        benchmark.extra_info.update(  # type: ignore[attr-defined]
            variant=variant, ns_per_send=round(median_s / SENDS * 1e9, 1)
        )
    finally:
        worker.ep.close()
        ours.close()
        theirs.close()
