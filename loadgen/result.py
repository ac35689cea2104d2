"""What a load run measured: :class:`LoadResult`, merged from every worker's report.

``to_json()`` is the result file's schema (``schema_version`` 2, LOAD_CONTRACT and
docs/loadgen.md): the config, the environment, counts inside the measurement window,
errors by kind, latency percentiles and the merged HdrHistogram in its standard encoding,
which ``hdrh`` can decode and add to other runs' histograms
(``loadgen.recording.merge_encoded``). ``LoadResult.from_json`` reads such a file back:
this module is the one owner of the format, writer and reader.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.config import LoadConfig
from loadgen.messages import SlotCounts, WorkerReport
from loadgen.recording import LatencySummary, encode, merge_encoded

SCHEMA_VERSION = 2
MIB = 1 << 20
# A client process at least this busy (CPU time over wall time, in the window) may be
# what limits the rate (closed loop) or delays the slots (open loop): the run measures
# the client as much as the server. The one definition; other modules import it.
CLIENT_BOUND_UTIL = 0.9
# Open loop: a run whose achieved rate is below this share of the offered rate did not
# get the load it asked for (the server, or the client, could not keep up).
ACHIEVED_SHARE = 0.99
EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_OVERLOADED = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class ConnectionCounts:
    active: int
    idle: int
    idle_open_at_end: int
    connect_errors: int


@dataclass(frozen=True)
class OpenLoopCounts:
    """What became of the slots due in the window, and the rates they make."""

    offered_rps: float
    due: int
    sent: int
    answered: int
    late: int
    refused: int
    duration_s: float

    def _rate(self, count: int) -> float:
        return count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def sent_rps(self) -> float:
        return self._rate(self.sent)

    @property
    def achieved_rps(self) -> float:
        return self._rate(self.answered)

    @property
    def overloaded(self) -> bool:
        return self.achieved_rps < ACHIEVED_SHARE * self.offered_rps

    @classmethod
    def from_json(cls, data: dict[str, Any], duration_s: float) -> OpenLoopCounts:
        """Read back :meth:`to_json`; the rates are derived again from the counts."""
        return cls(float(data["offered_rps"]), int(data["due"]), int(data["sent"]),
                   int(data["answered"]), int(data["late"]), int(data["refused"]),
                   duration_s)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "offered_rps": round(self.offered_rps, 3),
            "sent_rps": round(self.sent_rps, 3),
            "achieved_rps": round(self.achieved_rps, 3),
            "due": self.due,
            "sent": self.sent,
            "answered": self.answered,
            "late": self.late,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class LoadResult:
    config: LoadConfig
    environment: dict[str, Any]
    requests_ok: int
    requests_total: int
    errors: dict[str, int]
    duration_s: float
    bytes_sent: int
    bytes_received: int
    per_second: tuple[int, ...]
    client_cpu: tuple[float, ...]
    connections: ConnectionCounts
    latency: LatencySummary
    latency_uncorrected: LatencySummary | None
    histogram: str
    histogram_uncorrected: str | None
    interrupted: bool = False
    worker_failures: tuple[str, ...] = ()
    reconnects: int = 0
    open_loop: OpenLoopCounts | None = None
    parent_cpu: float = 0.0

    @property
    def client_bound(self) -> bool:
        return any(u >= CLIENT_BOUND_UTIL for u in (*self.client_cpu, self.parent_cpu))

    @property
    def overloaded(self) -> bool:
        return self.open_loop is not None and self.open_loop.overloaded

    @property
    def rps(self) -> float:
        return self.requests_ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mib_per_s(self) -> float:
        """Reply bytes per second, in MiB (what wrk calls Transfer/sec)."""
        return self.bytes_received / MIB / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def exit_status(self) -> int:
        """130 after Ctrl-C, 1 when anything went wrong, 3 when an open loop fell short of
        its rate without errors, else 0."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.error_count:
            return EXIT_ERRORS
        return EXIT_OVERLOADED if self.overloaded else EXIT_OK

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        """A result file read back, exactly as :meth:`to_json` wrote it (its rounding
        included); :class:`ValueError` for anything that is not a schema 2 result."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ValueError(f"not a schema {SCHEMA_VERSION} load result (schema {version})")
        try:
            return cls._from_json(data)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed load result: {type(exc).__name__} {exc}") from None

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> LoadResult:
        histogram = str(data["histogram"])
        uncorrected = data["histogram_uncorrected"]
        duration_s = float(data["duration_s"])
        open_loop = data["open_loop"]
        slots = None if open_loop is None else OpenLoopCounts.from_json(open_loop, duration_s)
        return cls(
            config=LoadConfig.from_json(data["config"]),
            environment=dict(data["environment"]),
            requests_ok=int(data["requests_ok"]),
            requests_total=int(data["requests_total"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            duration_s=duration_s,
            bytes_sent=int(data["bytes_sent"]),
            bytes_received=int(data["bytes_received"]),
            per_second=tuple(int(n) for n in data["per_second"]),
            client_cpu=tuple(float(u) for u in data["client_cpu"]),
            connections=ConnectionCounts(**data["connections"]),
            latency=LatencySummary.from_json(data["latency_us"], _count(histogram)),
            latency_uncorrected=(
                None
                if data["latency_us_uncorrected"] is None
                else LatencySummary.from_json(data["latency_us_uncorrected"], _count(uncorrected))
            ),
            histogram=histogram,
            histogram_uncorrected=None if uncorrected is None else str(uncorrected),
            interrupted=bool(data["interrupted"]),
            worker_failures=tuple(str(f) for f in data["worker_failures"]),
            reconnects=int(data["reconnects"]),
            open_loop=slots,
            parent_cpu=float(data["parent_cpu"]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": dataclasses.asdict(self.config),
            "environment": self.environment,
            "interrupted": self.interrupted,
            "requests_ok": self.requests_ok,
            "requests_total": self.requests_total,
            "errors": dict(sorted(self.errors.items())),
            "rps": round(self.rps, 1),
            "duration_s": round(self.duration_s, 6),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "mib_per_s": round(self.mib_per_s, 3),
            "latency_us": self.latency.to_json(),
            "latency_us_uncorrected": (
                self.latency_uncorrected.to_json() if self.latency_uncorrected else None
            ),
            "per_second": list(self.per_second),
            "client_cpu": [round(u, 4) for u in self.client_cpu],
            "parent_cpu": round(self.parent_cpu, 4),
            "client_bound": self.client_bound,
            "connections": dataclasses.asdict(self.connections),
            "reconnects": self.reconnects,
            "open_loop": self.open_loop.to_json() if self.open_loop is not None else None,
            "overloaded": self.overloaded,
            "histogram": self.histogram,
            "histogram_uncorrected": self.histogram_uncorrected,
            "worker_failures": list(self.worker_failures),
        }


def _count(encoded: str | None) -> int:
    """How many latencies an encoded histogram holds (0 for none or an empty string)."""
    return merge_encoded([encoded]).get_total_count() if encoded else 0


def merge_reports(
    config: LoadConfig,
    environment: dict[str, Any],
    reports: Sequence[WorkerReport],
    extra_errors: dict[str, int],
    worker_failures: Sequence[str],
    interrupted: bool,
    parent_cpu: float = 0.0,
) -> LoadResult:
    """Sum the workers' counts and add their histograms: exact, nothing is resampled."""
    errors: Counter[str] = Counter(extra_errors)
    for report in reports:
        errors.update(report.errors)
    seconds = max((len(r.per_second) for r in reports), default=0)
    per_second = [0] * seconds
    for report in reports:
        for i, count in enumerate(report.per_second):
            per_second[i] += count
    duration_s = max((r.window_ns for r in reports), default=0) / 1e9
    histogram = merge_encoded(r.histogram for r in reports)
    uncorrected = [r.histogram_uncorrected for r in reports if r.histogram_uncorrected]
    histogram_uncorrected = merge_encoded(uncorrected) if config.open_loop else None
    return LoadResult(
        config=config,
        environment=environment,
        requests_ok=sum(r.requests_ok for r in reports),
        requests_total=sum(r.requests_total for r in reports),
        errors=dict(errors),
        duration_s=duration_s,
        bytes_sent=sum(r.bytes_sent for r in reports),
        bytes_received=sum(r.bytes_received for r in reports),
        per_second=tuple(per_second),
        client_cpu=tuple(
            r.cpu_s / (r.cpu_wall_ns / 1e9) if r.cpu_wall_ns else 0.0 for r in reports
        ),
        parent_cpu=parent_cpu,
        connections=ConnectionCounts(
            active=sum(r.active_connected for r in reports),
            idle=sum(r.idle_connected for r in reports),
            idle_open_at_end=sum(r.idle_open_at_end for r in reports),
            connect_errors=sum(r.connect_errors for r in reports),
        ),
        latency=LatencySummary.of(histogram),
        latency_uncorrected=(
            LatencySummary.of(histogram_uncorrected) if histogram_uncorrected is not None else None
        ),
        histogram=encode(histogram),
        histogram_uncorrected=(
            encode(histogram_uncorrected) if histogram_uncorrected is not None else None
        ),
        interrupted=interrupted,
        worker_failures=tuple(worker_failures),
        reconnects=sum(r.reconnects for r in reports),
        open_loop=_open_loop_counts(config, reports, duration_s),
    )


def _open_loop_counts(
    config: LoadConfig, reports: Sequence[WorkerReport], duration_s: float
) -> OpenLoopCounts | None:
    if config.rate_rps is None:
        return None
    slots = [r.slots for r in reports if r.slots is not None]
    total = SlotCounts(*(sum(getattr(s, f.name) for s in slots)
                         for f in dataclasses.fields(SlotCounts)))  # fmt: skip
    return OpenLoopCounts(config.rate_rps, total.due, total.sent, total.answered,
                          total.late, total.refused, duration_s)  # fmt: skip
