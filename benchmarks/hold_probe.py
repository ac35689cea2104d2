"""What the kernel and ``/proc`` say during a hold (:mod:`benchmarks.hold`).

TCP counters of the network namespace (``/proc/net/netstat`` and ``/proc/net/snmp``, what
``nstat`` reads), a listener's accept queue (``ss -ltn``: Recv-Q is its length, Send-Q its
bound), and the memory and descriptors of server processes (``proc(5)``).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# TCP counters that tell why a connect waited or failed, with the file section they are
# in (/proc/net/netstat "TcpExt", /proc/net/snmp "Tcp").
KERNEL_COUNTERS = (
    ("TcpExt", "ListenOverflows"),
    ("TcpExt", "ListenDrops"),
    ("TcpExt", "TCPReqQFullDrop"),
    ("TcpExt", "TCPReqQFullDoCookies"),
    ("TcpExt", "SyncookiesSent"),
    ("TcpExt", "TCPSynRetrans"),
    ("TcpExt", "TCPTimeouts"),
    ("Tcp", "ActiveOpens"),
    ("Tcp", "PassiveOpens"),
    ("Tcp", "AttemptFails"),
)
QUEUE_SAMPLE_S = 0.05
_PID = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class QueueSample:
    peak_queued: int  # largest accept-queue length seen (Recv-Q of the listener)
    backlog: int  # the accept queue's bound (Send-Q of the listener)
    samples: int


# -- what the kernel and /proc say ---------------------------------------------------------


def read_kernel_counters() -> dict[str, int]:
    """The counters of :data:`KERNEL_COUNTERS`, named ``Section.Name``."""
    values: dict[str, int] = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = Path(path).read_text().splitlines()
        # Each section is two lines: "Name: field ...", then "Name: value ...".
        for header, numbers in zip(lines[::2], lines[1::2], strict=False):
            section, _, names = header.partition(":")
            for name, value in zip(names.split(), numbers.partition(":")[2].split(), strict=True):
                values[f"{section}.{name}"] = int(value)
    return {f"{s}.{n}": values.get(f"{s}.{n}", 0) for s, n in KERNEL_COUNTERS}


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/PID/task/TID/children``, ``proc(5)``)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def rss_kib(pid: int) -> int:
    """``VmRSS`` of one process (``proc(5)``); 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(rss_kib(each) for each in tree_pids(pid))


def established_by_pid(port: int) -> Counter[int]:
    """The established TCP connections to local ``port``, by the pid holding each
    (``ss -tnp``, ``users:(("name",pid=N,fd=M))``). Counts only connections, never the
    listeners or the socketpairs a server keeps for itself (nginx passes its workers'
    channels to each other while they start)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return Counter(int(m.group(1)) for m in map(_PID.search, out.splitlines()) if m)


def listener_queue(port: int) -> tuple[int, int] | None:
    """``(queued, bound)`` of the TCP listeners on ``port``: ss's Recv-Q and Send-Q. With
    ``SO_REUSEPORT`` each worker has its own listener and queue: the longest one."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=5
    ).stdout.splitlines()
    queues = [(int(f[1]), int(f[2])) for f in (line.split() for line in out) if len(f) >= 3]
    return max(queues) if queues else None


class QueueSampler:
    """Samples the listener's accept queue in a thread until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0
        self.backlog = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(QUEUE_SAMPLE_S):
            sample = listener_queue(self.port)
            if sample is not None:
                self.samples += 1
                self.peak = max(self.peak, sample[0])
                self.backlog = sample[1]

    def result(self) -> QueueSample:
        return QueueSample(self.peak, self.backlog, self.samples)
