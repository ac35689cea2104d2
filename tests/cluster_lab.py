"""Helpers for the ``--cluster`` tests: a Dask cluster of child processes, socket counts.

Every process started here is in its own session (``setsid``), so the whole group,
including load generator processes a killed Dask worker left behind, is killed and the
direct children reaped when the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from servers.process import terminate
from tests.conftest import require_available

ROOT = Path(__file__).resolve().parent.parent
NETNS_LAB = ROOT / "scripts" / "netns-lab.sh"
START_TIMEOUT_S = 90.0


def require_distributed() -> None:
    missing = [name for name in ("distributed",) if find_spec(name) is None]
    reason = f"{missing[0]} not installed: pip install -e '.[cluster]'" if missing else None
    require_available("muxlab[cluster] (Dask distributed)", reason)


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout_s: float) -> None:
    """Read ``proc``'s stdout until the line ``expected``; fail at EOF or ``timeout_s``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        left_s = deadline - time.monotonic()
        assert left_s > 0, f"no {expected!r} line within {timeout_s} s"
        if select.select([proc.stdout], [], [], left_s)[0]:
            line = proc.stdout.readline()
            assert line, f"stdout ended before a {expected!r} line"
            if line.rstrip("\n") == expected:
                return


@dataclass
class LocalDask:
    """A scheduler and named ``--no-nanny`` workers on loopback, as child processes."""

    scheduler_file: Path
    procs: dict[str, subprocess.Popen[bytes]]

    @property
    def address(self) -> str:
        address: str = json.loads(self.scheduler_file.read_text())["address"]
        return address

    def kill(self, name: str) -> None:
        """SIGKILL the worker process only, as a host that vanishes."""
        self.procs[name].kill()


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)  # fmt: skip


def _wait_for_workers(scheduler_file: Path, count: int) -> None:
    code = (
        "import distributed, sys\n"
        f"with distributed.Client(scheduler_file={str(scheduler_file)!r}, timeout='60s') as c:\n"
        f"    c.wait_for_workers({count}, timeout=60)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=START_TIMEOUT_S,
                   capture_output=True)  # fmt: skip


@contextlib.contextmanager
def local_dask(
    tmp: Path, workers: Sequence[str], with_nanny: Sequence[str] = ()
) -> Iterator[LocalDask]:
    """``workers`` run with ``--no-nanny`` unless named in ``with_nanny``."""
    scheduler_file = tmp / "scheduler.json"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["scheduler"] = _spawn(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
            tmp / "scheduler.log",
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            assert time.monotonic() < deadline, (tmp / "scheduler.log").read_text()
            time.sleep(0.2)
        for name in workers:
            procs[name] = _spawn(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                 str(scheduler_file), "--nanny" if name in with_nanny else "--no-nanny",
                 "--nthreads", "1", "--name", name,
                 "--host", "127.0.0.1", "--no-dashboard"],
                tmp / f"{name}.log",
            )  # fmt: skip
        _wait_for_workers(scheduler_file, len(workers))
        yield LocalDask(scheduler_file, procs)
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def netns_lab(
    action: str, name: str, state: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUXLAB_PYTHON": sys.executable, "MUXLAB_NETNS_STATE": str(state)}
    return subprocess.run(["bash", str(NETNS_LAB), action, "--name", name, *options], env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


class NetnsLab:
    """One lab of scripts/netns-lab.sh, under a unique name so that parallel runs (and
    other helpers' labs) do not clash."""

    def __init__(self, state: Path, prefix: str) -> None:
        self.name = f"{prefix}{uuid.uuid4().hex[:7]}"
        self.state = state
        self.server_ns = f"{self.name}-srv"

    def namespaces(self) -> list[str]:
        return [n for n in os.listdir("/run/netns") if n.startswith(f"{self.name}-")]

    def worker_pid(self, worker: str) -> int:
        return int((self.state / f"muxlab-netns-{self.name}" / f"{worker}.pid").read_text())


@contextlib.contextmanager
def running_lab(state: Path, prefix: str, *options: str) -> Iterator[NetnsLab]:
    """A lab up (``netns-lab.sh up`` with ``options``) for the block, down after it
    whatever happened; skipped with the reason when it cannot run here."""
    require_netns()
    require_distributed()
    lab = NetnsLab(state, prefix)
    try:
        up = netns_lab("up", lab.name, state, *options)
        assert up.returncode == 0, up.stdout + up.stderr
        yield lab
    finally:
        down = netns_lab("down", lab.name, state)
        assert down.returncode == 0, down.stderr


def require_netns() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (ip netns add)"
    elif shutil.which("ip") is None:
        reason = "ip (Debian package iproute2) is not installed"
    require_available("network namespace lab", reason)


@contextlib.contextmanager
def serve_in_netns(netns: str, host: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """``muxlab serve`` inside ``netns``, ready (its ready line read); always reaped."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "muxlab", "serve",
         "--backend", "epoll-lt", "--host", host, "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith(f"muxlab: listening on {host}:{port} "), line
        yield proc
    finally:
        terminate(proc, signal.SIGTERM, grace_s=10.0)
