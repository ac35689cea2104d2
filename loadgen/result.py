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


@dataclass(frozen=True)
class Part:
    """What one worker (or one host's whole run) adds to a merged result: counts and the
    seconds add up, histograms are decoded and added, the window is the longest."""

    requests_ok: int
    requests_total: int
    errors: dict[str, int]
    window_s: float
    bytes_sent: int
    bytes_received: int
    per_second: tuple[int, ...]
    client_cpu: tuple[float, ...]
    connections: ConnectionCounts
    histogram: str
    histogram_uncorrected: str | None
    reconnects: int
    slots: SlotCounts | None

    @classmethod
    def of_report(cls, report: WorkerReport) -> Part:
        cpu = report.cpu_s / (report.cpu_wall_ns / 1e9) if report.cpu_wall_ns else 0.0
        return cls(
            report.requests_ok, report.requests_total, report.errors, report.window_ns / 1e9,
            report.bytes_sent, report.bytes_received, tuple(report.per_second), (cpu,),
            ConnectionCounts(report.active_connected, report.idle_connected,
                             report.idle_open_at_end, report.connect_errors),
            report.histogram, report.histogram_uncorrected, report.reconnects, report.slots,
        )  # fmt: skip

    @classmethod
    def of_result(cls, result: LoadResult) -> Part:
        counts = result.open_loop
        slots = None if counts is None else SlotCounts(
            counts.due, counts.sent, counts.answered, counts.late, counts.refused
        )  # fmt: skip
        return cls(
            result.requests_ok, result.requests_total, result.errors, result.duration_s,
            result.bytes_sent, result.bytes_received, result.per_second, result.client_cpu,
            result.connections, result.histogram, result.histogram_uncorrected,
            result.reconnects, slots,
        )  # fmt: skip


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
    parts = [Part.of_report(r) for r in reports]
    return merge_parts(config, environment, parts, extra_errors, worker_failures, interrupted,
                       parent_cpu)  # fmt: skip


def merge_parts(
    config: LoadConfig,
    environment: dict[str, Any],
    parts: Sequence[Part],
    extra_errors: dict[str, int],
    worker_failures: Sequence[str],
    interrupted: bool,
    parent_cpu: float,
) -> LoadResult:
    """The one merge: a run's workers (:func:`merge_reports`) and a cluster run's hosts
    (``loadgen.cluster_result``) alike. ``per_second`` adds second by second, meaningful
    because every part's window opened at the same moment."""
    errors: Counter[str] = Counter(extra_errors)
    for part in parts:
        errors.update(part.errors)
    seconds = max((len(p.per_second) for p in parts), default=0)
    per_second = [0] * seconds
    for part in parts:
        for i, count in enumerate(part.per_second):
            per_second[i] += count
    duration_s = max((p.window_s for p in parts), default=0.0)
    histogram = merge_encoded(p.histogram for p in parts)
    uncorrected = [p.histogram_uncorrected for p in parts if p.histogram_uncorrected]
    histogram_uncorrected = merge_encoded(uncorrected) if config.open_loop else None
    return LoadResult(
        config=config,
        environment=environment,
        requests_ok=sum(p.requests_ok for p in parts),
        requests_total=sum(p.requests_total for p in parts),
        errors=dict(errors),
        duration_s=duration_s,
        bytes_sent=sum(p.bytes_sent for p in parts),
        bytes_received=sum(p.bytes_received for p in parts),
        per_second=tuple(per_second),
        client_cpu=tuple(u for p in parts for u in p.client_cpu),
        parent_cpu=parent_cpu,
        connections=ConnectionCounts(
            active=sum(p.connections.active for p in parts),
            idle=sum(p.connections.idle for p in parts),
            idle_open_at_end=sum(p.connections.idle_open_at_end for p in parts),
            connect_errors=sum(p.connections.connect_errors for p in parts),
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
        reconnects=sum(p.reconnects for p in parts),
        open_loop=_open_loop_counts(config, parts, duration_s),
    )


def _open_loop_counts(
    config: LoadConfig, parts: Sequence[Part], duration_s: float
) -> OpenLoopCounts | None:
    if config.rate_rps is None:
        return None
    slots = [p.slots for p in parts if p.slots is not None]
    total = SlotCounts(*(sum(getattr(s, f.name) for s in slots)
                         for f in dataclasses.fields(SlotCounts)))  # fmt: skip
    return OpenLoopCounts(config.rate_rps, total.due, total.sent, total.answered,
                          total.late, total.refused, duration_s)  # fmt: skip
