"""What crosses the pipe between the parent (``loadgen.runner``) and a worker process.

Every message is a frozen dataclass, pickled by ``multiprocessing.Connection.send``; the
parent and the worker match on the type, never on a tag string. The order of a run:

- worker -> parent: :class:`Ready` once its connections are open (the ramp);
- parent -> worker: :class:`Go` with absolute phase boundaries, or :class:`Stop`;
- worker -> parent: :class:`WorkerProgress` about twice a second when asked for, then
  exactly one :class:`Done` with its report, or :class:`Failed` with the reason;
- parent -> worker: :class:`Stop` at any time (Ctrl-C, a missed start deadline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.config import LoadProtocol
from loadgen.schedule import Phases


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one worker needs, picklable: its share of the run."""

    index: int
    family: int
    sockaddr: tuple[Any, ...]
    protocol: LoadProtocol
    request: bytes  # the protocol client's fixed request, built once by the parent
    first_cid: int  # connection ids are unique over all workers: cross-talk shows
    active: int
    idle: int
    all_active: int
    size_bytes: int
    pipeline: int
    rate_rps: float | None  # this worker's share of the total rate
    connect_rate_cps: float  # this worker's share of the connect rate
    timeout_s: float
    cpu: int | None
    fds_needed: int
    progress: bool
    # Bound before each connect, round-robin (loadgen.connection); (): the kernel's choice.
    source_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotCounts:
    """Open loop: what became of the slots due in the window (``due`` = the other three
    summed: every slot is answered in the window, late at its end, or refused)."""

    due: int
    sent: int
    answered: int
    late: int
    refused: int


@dataclass(frozen=True)
class RampReport:
    active: int
    idle: int
    connect_errors: int


@dataclass(frozen=True)
class WorkerReport:
    index: int
    requests_ok: int
    requests_total: int
    errors: dict[str, int]
    bytes_sent: int
    bytes_received: int
    per_second: list[int]
    cpu_s: float  # user + system CPU time of this process between the window's edges
    cpu_wall_ns: int  # wall time between the same two readings
    window_ns: int
    active_connected: int
    idle_connected: int
    idle_open_at_end: int
    connect_errors: int
    reconnects: int
    slots: SlotCounts | None  # open loop only
    histogram: str
    histogram_uncorrected: str | None


# -- parent -> worker ----------------------------------------------------------------------


@dataclass(frozen=True)
class Go:
    phases: Phases


@dataclass(frozen=True)
class Stop:
    pass


ToWorker = Go | Stop


# -- worker -> parent ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    ramp: RampReport


@dataclass(frozen=True)
class WorkerProgress:
    index: int
    requests_done: int
    errors: int


@dataclass(frozen=True)
class Done:
    report: WorkerReport


@dataclass(frozen=True)
class Failed:
    index: int
    reason: str


FromWorker = Ready | WorkerProgress | Done | Failed
