"""The sweep's results file: one versioned JSON document, rewritten whole after every run.

Layout (``schema_version`` 2)::

    {"schema_version": 2, "kind": "muxlab-sweep", "run_id", "state",
     "command": [...], "command_line", "cwd", "started_at", "updated_at", "resumed": [...],
     "environment": {...}, "provenance": {...}, "pinning": {"server_cpu", "client_cpus"},
     "topology": {"mode": "local"} or the cluster's hosts (benchmarks/topology.py),
     "plan": {"preset", "repeats", "retries", "duration_s", "warmup_s", "experiments": [...]},
     "points": [{"key", "spec", "experiments", "kinds", "status", "reason", "client_bound",
                 "repeats_wanted", "repeats_valid",
                 "repeats": [{...one attempt: "repeat", "attempt", "valid", "problems"...}],
                 "summary": {metric: {median, min, max, ci_low, ci_high, q25, q75, n}}}],
     "notes": [...]}

``status`` is ``pending``, ``done`` (every repeat slot settled, at least one valid
repeat), ``skipped`` (cannot be measured by design or on this machine; ``reason`` says
why) or ``failed`` (no valid repeat; ``reason`` says what went wrong). ``repeats`` holds
every attempt, invalid ones included with their ``problems``; only valid ones enter the
summary (:mod:`benchmarks.validity`). Schema 1 files (before validity) are read as if
every repeat were valid.
Every write goes through :func:`muxlab.atomic.write_json_atomic`, so an interrupted sweep
leaves the file as it was after its last complete run, and ``--resume`` continues from it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.experiments import SweepPlan, plan_to_json
from benchmarks.names import check_safe_name
from benchmarks.stats import median_interval
from benchmarks.topology import LOCAL, SweepTopology
from muxlab.atomic import write_json_atomic, write_text_atomic
from muxlab.errors import UsageError

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
RESULTS_KIND = "muxlab-sweep"
RESULTS_NAME = "results.json"
CSV_NAME = "results.csv"
REPEATS_CSV_NAME = "repeats.csv"
STATUSES = ("pending", "done", "skipped", "failed")

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
    "syscalls_per_request": ("system calls/request", "server system calls / requests"),
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
    attempt: int = 1  # 1, then one more per retry of the same repeat slot
    valid: bool = True
    problems: tuple[str, ...] = ()  # why it is invalid (benchmarks.validity)
    client_window_s: float | None = None  # the load generator's own window
    snapshot_lags_s: tuple[float, float] | None = None  # phase line -> server snapshot
    parent_cpu: float | None = None  # the load generator's runner process (schema 2)
    load_schema: int = 1
    # Connections the server accepted in all, from its final counters (None: not counted).
    server_connections_accepted: int | None = None


@dataclass(frozen=True)
class UnmeasuredRun:
    """An attempt that produced no measurement at all (server or load generator failed)."""

    repeat: int
    attempt: int
    started_at: str
    problems: tuple[str, ...]
    valid: bool = False


def valid_runs(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The repeats that count; schema 1 repeats carry no ``valid`` and were all kept."""
    return [run for run in record["repeats"] if run.get("valid", True)]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def summarize(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Per metric over the valid repeats: median, min-max, bootstrap 95% interval of the
    median (:mod:`benchmarks.stats`), and the quartiles."""
    runs = [run for run in runs if run.get("valid", True)]
    summary: dict[str, dict[str, float | int | None]] = {}
    for name in METRICS:
        values = [r["metrics"].get(name) for r in runs]
        present = np.array([v for v in values if v is not None], dtype=float)
        if present.size == 0:
            summary[name] = {k: None for k in SUMMARY_FIELDS} | {"n": 0}
            continue
        q25, median, q75 = np.percentile(present, [25, 50, 75])
        interval = median_interval(list(present))
        summary[name] = {
            "median": float(median),
            "min": float(present.min()),
            "max": float(present.max()),
            "ci_low": None if interval is None else interval.low,
            "ci_high": None if interval is None else interval.high,
            "q25": float(q25),
            "q75": float(q75),
            "n": int(present.size),
        }
    return summary


SUMMARY_FIELDS = ("median", "min", "max", "ci_low", "ci_high", "q25", "q75")


class ResultsFile:
    """The results document of one run directory; every mutation is followed by :meth:`save`."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / RESULTS_NAME

    @property
    def topology(self) -> SweepTopology:
        """Where the sweep ran; local for a file written before the field existed."""
        return SweepTopology.from_json(self.data.get("topology"))

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
        provenance: dict[str, Any] | None = None,
        topology: SweepTopology = LOCAL,
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
            "provenance": provenance or {},
            "pinning": pinning,
            "topology": topology.to_json(),
            "plan": plan_to_json(plan),
            "points": [
                {
                    "key": point.key,
                    "spec": asdict(point),
                    "experiments": plan.experiments_of(point),
                    "kinds": plan.kinds_of(point),
                    "status": "pending",
                    "reason": None,
                    "client_bound": False,
                    "repeats_wanted": plan.repeats_of(point),
                    "repeats_valid": 0,
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

    def add_run(self, key: str, run: RunResult | UnmeasuredRun) -> None:
        """Record one attempt, valid or not, and settle the point's status."""
        record = self.point(key)
        record["repeats"].append(asdict(run))
        valid = valid_runs(record)
        record["repeats_valid"] = len(valid)
        record["summary"] = summarize(valid)
        record["client_bound"] = any(r["client_bound"] for r in valid)
        settle(record, self.data["plan"].get("retries", 0))
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

    def write_csv(self) -> list[Path]:
        """``results.csv`` (one row per point) and ``repeats.csv`` (one per attempt)."""
        from benchmarks.results_csv import repeats_csv, results_csv  # it reads METRICS here

        paths = [self.run_dir / CSV_NAME, self.run_dir / REPEATS_CSV_NAME]
        write_text_atomic(paths[0], results_csv(self.data))
        write_text_atomic(paths[1], repeats_csv(self.data))
        return paths


def slot_attempts(record: dict[str, Any], repeat: int) -> list[dict[str, Any]]:
    return [run for run in record["repeats"] if run["repeat"] == repeat]


def slot_settled(record: dict[str, Any], repeat: int, retries: int) -> bool:
    """A repeat slot is settled by a valid attempt or by 1 + ``retries`` invalid ones."""
    attempts = slot_attempts(record, repeat)
    return any(run.get("valid", True) for run in attempts) or len(attempts) > retries


def settle(record: dict[str, Any], retries: int) -> None:
    """``done`` or ``failed`` once every repeat slot is settled; ``pending`` before."""
    wanted = record.get("repeats_wanted", 0)
    if not all(slot_settled(record, n, retries) for n in range(1, wanted + 1)):
        record["status"], record["reason"] = "pending", None
        return
    valid = len(valid_runs(record))
    invalid = [run for run in record["repeats"] if not run.get("valid", True)]
    if valid == 0:
        record["status"] = "failed"
        record["reason"] = "no valid repeat: " + "; ".join(distinct_problems(invalid))
        return
    record["status"] = "done"
    record["reason"] = None
    if valid < wanted:
        record["reason"] = f"{valid} of {wanted} repeats valid: " + "; ".join(
            distinct_problems(invalid)
        )


def distinct_problems(runs: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for problem in run.get("problems", ()):
            seen.setdefault(problem)
    return list(seen)


def read_results_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise UsageError(f"{path} is not a muxlab sweep results file")
    if data.get("schema_version") not in READABLE_SCHEMAS:
        raise UsageError(
            f"{path} has schema_version {data.get('schema_version')!r}; this muxlab reads "
            f"{', '.join(map(str, READABLE_SCHEMAS))}"
        )
    for experiment in data.get("plan", {}).get("experiments", []):
        # Experiment names become chart file names: refuse a file that would write
        # elsewhere (issue 9).
        check_safe_name("experiment name", str(experiment.get("name")))
    try:
        SweepTopology.from_json(data.get("topology"))
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return data


def consistency_problems(record: dict[str, Any]) -> list[str]:
    """Where the client's request count and the server's reply count disagree.

    Exact bound: at shutdown the server has sent a reply for every request the client
    counted, plus at most the requests still in flight when the client stopped
    (``connections x pipeline``) and those lost to errors.
    """
    spec = record["spec"]
    in_flight = spec["connections"] * spec["pipeline"]
    problems = []
    for run in valid_runs(record):
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


def validate(data: dict[str, Any]) -> list[str]:
    """Every problem with a results document: schema, completeness, counters.

    Invalid repeats are expected (they are recorded with their reasons and left out);
    what this catches is a *valid* repeat or a settled point that should not be one.
    """
    problems = []
    for key in ("run_id", "state", "command", "environment", "plan", "points", "notes"):
        if key not in data:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        return problems
    for record in data["points"]:
        if record["status"] not in STATUSES:
            problems.append(f"{record['key']}: unknown status {record['status']!r}")
        wanted = record.get("repeats_wanted", data["plan"]["repeats"])
        valid = valid_runs(record)
        if record["status"] == "done" and not 1 <= len(valid) <= wanted:
            problems.append(f"{record['key']}: {len(valid)} valid repeats, wanted {wanted}")
        if record["status"] in ("skipped", "failed") and not record["reason"]:
            problems.append(f"{record['key']}: {record['status']} without a reason")
        if record["status"] == "failed" and valid:
            problems.append(f"{record['key']}: failed with {len(valid)} valid repeats")
        if record["status"] == "done":
            problems += consistency_problems(record)
            problems += connection_problems(record)
    return problems


def connection_problems(record: dict[str, Any]) -> list[str]:
    """Valid repeats whose idle connections were not all held, from either end."""
    problems = []
    idle = record["spec"]["idle"]
    wanted = record["spec"]["connections"] + idle
    for run in valid_runs(record):
        still_open = run["idle_open_at_end"]
        if still_open is not None and still_open < idle:
            problems.append(
                f"{record['key']} repeat {run['repeat']}: only {still_open} of {idle} "
                "idle connections were still open at the end"
            )
        # A connection the server never accepted still looks open to the client (it waits
        # in the listen backlog), so the server's own count is the proof that the idle
        # connections were really watched during the window.
        held = run.get("server_connections_open")
        if held is not None and held < wanted:
            problems.append(
                f"{record['key']} repeat {run['repeat']}: the server held {held} "
                f"connections in the window, not {wanted}"
            )
    return problems
