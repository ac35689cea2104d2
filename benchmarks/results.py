"""The sweep's results file: one versioned JSON document, rewritten whole after every run.

Layout (``schema_version`` 1)::

    {"schema_version": 1, "kind": "muxlab-sweep", "run_id", "state",
     "command": [...], "command_line", "cwd", "started_at", "updated_at", "resumed": [...],
     "environment": {...}, "pinning": {"server_cpu", "client_cpus"},
     "plan": {"preset", "repeats", "duration_s", "warmup_s", "experiments": [...]},
     "points": [{"key", "spec", "experiments", "status", "reason", "client_bound",
                 "repeats": [{...one run...}], "summary": {metric: {median, q25, q75, n}}}],
     "notes": [...]}

``status`` is ``pending``, ``done`` (all repeats measured), ``skipped`` (cannot be
measured by design or on this machine; ``reason`` says why) or ``failed`` (``reason``).
Every write goes through :func:`muxlab.atomic.write_json_atomic`, so an interrupted sweep
leaves the file as it was after its last complete run, and ``--resume`` continues from it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.experiments import PointSpec, SweepPlan, plan_to_json
from muxlab.atomic import write_json_atomic, write_text_atomic
from muxlab.errors import UsageError

SCHEMA_VERSION = 1
RESULTS_KIND = "muxlab-sweep"
RESULTS_NAME = "results.json"
CSV_NAME = "results.csv"
STATUSES = ("pending", "done", "skipped", "failed")
# A client whose CPUs were this busy may have been the bottleneck (issue 4).
CLIENT_BOUND_UTIL = 0.9

# name -> (label with unit, what it is); the derived numbers charts and tables read.
METRICS: dict[str, tuple[str, str]] = {
    "rps": ("requests/s", "requests completed in the measurement window, per second"),
    "mib_per_s": ("MiB/s", "payload received by the client per second"),
    "p50_us": ("p50 latency (us)", "median request latency, client side"),
    "p99_us": ("p99 latency (us)", "99th percentile request latency, client side"),
    "cpu_us_per_request": ("server CPU (us/request)", "server user+sys CPU / requests"),
    "wait_cpu_us": ("CPU per wait call (us)", "server CPU / wait calls, dispatch included"),
    "wait_calls_per_request": ("wait calls/request", "server wait calls / requests"),
    "events_per_wait": ("events/wait call", "events returned per wait call"),
    "reads_per_request": ("reads/request", "recv calls (data or EOF) / requests"),
    "reads_eagain_per_request": ("EAGAIN reads/request", "recv calls that hit EAGAIN / requests"),
    "server_cpu_util": ("server CPU (fraction of 1 CPU)", "server CPU s / window s"),
    "client_cpu_util": ("client CPU (fraction of its CPUs)", "mean client worker utilisation"),
}


@dataclass(frozen=True)
class RunResult:
    """One repeat of one point: the raw numbers and what is derived from them."""

    repeat: int
    started_at: str
    loadgen_status: int
    loadgen_json: str  # path relative to the run directory
    window_s: float  # between the server snapshots at the two phase lines
    requests_ok: int  # client-counted, in the load generator's window
    requests_total: int  # client-counted, warm-up included
    errors: dict[str, int]
    latency_us: dict[str, float]
    client_cpu: tuple[float, ...]
    client_bound: bool
    server_cpu_s: float
    server_delta: dict[str, int]  # counter deltas between the two snapshots
    server_replies_window: int | None  # from bytes_out; None when the server cannot count
    server_replies_total: int | None  # from the final counters at shutdown
    idle_open_at_end: int | None
    metrics: dict[str, float | None]
    # Connections the server held when the window opened; None when it cannot count (nginx)
    # or for results files written before this field existed.
    server_connections_open: int | None = None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def summarize(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Median and inter-quartile range of every metric over the repeats."""
    runs = list(runs)
    summary: dict[str, dict[str, float | int | None]] = {}
    for name in METRICS:
        values = [r["metrics"].get(name) for r in runs]
        present = np.array([v for v in values if v is not None], dtype=float)
        if present.size == 0:
            summary[name] = {"median": None, "q25": None, "q75": None, "n": 0}
            continue
        q25, median, q75 = np.percentile(present, [25, 50, 75])
        summary[name] = {
            "median": float(median),
            "q25": float(q25),
            "q75": float(q75),
            "n": int(present.size),
        }
    return summary


class ResultsFile:
    """The results document of one run directory; every mutation is followed by :meth:`save`."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / RESULTS_NAME

    @classmethod
    def create(
        cls,
        run_dir: Path,
        run_id: str,
        plan: SweepPlan,
        command: list[str],
        environment: dict[str, Any],
        pinning: dict[str, Any],
        notes: list[str],
    ) -> ResultsFile:
        started = now_iso()
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": RESULTS_KIND,
            "run_id": run_id,
            "state": "running",
            "command": command,
            "command_line": " ".join(command),
            "cwd": str(Path.cwd()),
            "started_at": started,
            "updated_at": started,
            "resumed": [],
            "environment": environment,
            "pinning": pinning,
            "plan": plan_to_json(plan),
            "points": [
                {
                    "key": point.key,
                    "spec": asdict(point),
                    "experiments": plan.experiments_of(point),
                    "status": "pending",
                    "reason": None,
                    "client_bound": False,
                    "repeats": [],
                    "summary": {},
                }
                for point in plan.points()
            ],
            "notes": notes,
        }
        results = cls(run_dir, data)
        results.save()
        return results

    @classmethod
    def load(cls, path: Path) -> ResultsFile:
        """A results file from ``path`` (the JSON file or its run directory)."""
        if path.is_dir():
            path = path / RESULTS_NAME
        data = read_results_json(path)
        return cls(path.parent, data)

    # -- points --------------------------------------------------------------------------

    def point(self, key: str) -> dict[str, Any]:
        for record in self.data["points"]:
            if record["key"] == key:
                found: dict[str, Any] = record
                return found
        raise KeyError(key)

    def add_run(self, key: str, run: RunResult) -> None:
        record = self.point(key)
        record["repeats"].append(asdict(run))
        record["summary"] = summarize(record["repeats"])
        record["client_bound"] = any(r["client_bound"] for r in record["repeats"])
        repeats_wanted = self.data["plan"]["repeats"]
        record["status"] = "done" if len(record["repeats"]) >= repeats_wanted else "pending"
        self.save()

    def mark(self, key: str, status: str, reason: str) -> None:
        record = self.point(key)
        record["status"] = status
        record["reason"] = reason
        self.save()

    def set_state(self, state: str) -> None:
        self.data["state"] = state
        self.save()

    def note(self, text: str) -> None:
        if text not in self.data["notes"]:
            self.data["notes"].append(text)
            self.save()

    # -- files ---------------------------------------------------------------------------

    def save(self) -> None:
        self.data["updated_at"] = now_iso()
        write_json_atomic(self.path, self.data)

    def write_csv(self) -> Path:
        path = self.run_dir / CSV_NAME
        write_text_atomic(path, results_csv(self.data))
        return path


def read_results_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise UsageError(f"{path} is not a muxlab sweep results file")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(
            f"{path} has schema_version {data.get('schema_version')!r}; this muxlab reads "
            f"{SCHEMA_VERSION}"
        )
    return data


def point_spec(record: dict[str, Any]) -> PointSpec:
    return PointSpec(**record["spec"])


def results_csv(data: dict[str, Any]) -> str:
    """One row per point: its parameters, status, flags, and median/q25/q75 per metric."""
    spec_fields = ["impl", "protocol", "connections", "idle", "msg_bytes", "pipeline"]
    metric_fields = [f"{m}_{s}" for m in METRICS for s in ("median", "q25", "q75")]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "key",
            "experiments",
            *spec_fields,
            "status",
            "reason",
            "client_bound",
            "repeats",
            *metric_fields,
        ]
    )
    for record in data["points"]:
        summary = record.get("summary") or {}
        values = []
        for metric in METRICS:
            stats = summary.get(metric) or {}
            values += [_csv_number(stats.get(s)) for s in ("median", "q25", "q75")]
        writer.writerow(
            [
                record["key"],
                " ".join(record["experiments"]),
                *(record["spec"][f] for f in spec_fields),
                record["status"],
                record["reason"] or "",
                int(record["client_bound"]),
                len(record["repeats"]),
                *values,
            ]
        )
    return out.getvalue()


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# -- validation ------------------------------------------------------------------------


def consistency_problems(record: dict[str, Any]) -> list[str]:
    """Where the client's request count and the server's reply count disagree.

    Exact bound: at shutdown the server has sent a reply for every request the client
    counted, plus at most the requests still in flight when the client stopped
    (``connections x pipeline``) and those lost to errors.
    """
    spec = record["spec"]
    in_flight = spec["connections"] * spec["pipeline"]
    problems = []
    for run in record["repeats"]:
        served = run["server_replies_total"]
        if served is None:
            continue  # nginx counts nothing
        lost = sum(run["errors"].values())
        extra = served - run["requests_total"]
        if not -lost <= extra <= in_flight + lost:
            problems.append(
                f"{record['key']} repeat {run['repeat']}: server replied {served} times, "
                f"client counted {run['requests_total']} (in flight <= {in_flight})"
            )
    return problems


def window_drift(record: dict[str, Any], tolerance: float = 0.1) -> list[str]:
    """Runs whose server window and client window counted requests more than 10% apart.

    The two windows open and close a signal round-trip apart; on a busy machine that can
    be long enough to matter, and then CPU per request (server CPU over server-counted
    replies, both in the server's window) is still right but the window is shifted.
    """
    spec = record["spec"]
    drifts = []
    for run in record["repeats"]:
        window = run["server_replies_window"]
        if window is None:
            continue
        slack = spec["connections"] * spec["pipeline"] + tolerance * run["requests_ok"]
        if abs(window - run["requests_ok"]) > slack:
            drifts.append(
                f"{record['key']} repeat {run['repeat']}: {window} replies in the server's "
                f"window, {run['requests_ok']} in the client's"
            )
    return drifts


def validate(data: dict[str, Any]) -> list[str]:
    """Every problem with a results document: schema, completeness, counters."""
    problems = []
    for key in ("run_id", "state", "command", "environment", "plan", "points", "notes"):
        if key not in data:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        return problems
    repeats = data["plan"]["repeats"]
    for record in data["points"]:
        if record["status"] not in STATUSES:
            problems.append(f"{record['key']}: unknown status {record['status']!r}")
        if record["status"] == "done" and len(record["repeats"]) != repeats:
            problems.append(f"{record['key']}: {len(record['repeats'])} repeats, not {repeats}")
        if record["status"] in ("skipped", "failed") and not record["reason"]:
            problems.append(f"{record['key']}: {record['status']} without a reason")
        if record["status"] == "done":
            problems += consistency_problems(record)
            idle = record["spec"]["idle"]
            for run in record["repeats"]:
                still_open = run["idle_open_at_end"]
                if still_open is not None and still_open < idle:
                    problems.append(
                        f"{record['key']} repeat {run['repeat']}: only {still_open} of {idle} "
                        "idle connections were still open at the end"
                    )
                # A connection the server never accepted still looks open to the client
                # (it waits in the listen backlog), so the server's own count is the proof
                # that the idle connections were really watched during the window.
                held = run.get("server_connections_open")
                wanted = record["spec"]["connections"] + idle
                if held is not None and held < wanted:
                    problems.append(
                        f"{record['key']} repeat {run['repeat']}: the server held {held} "
                        f"connections in the window, not {wanted}"
                    )
    return problems
