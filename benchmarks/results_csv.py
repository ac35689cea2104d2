"""The sweep's two CSV files, from a results document: one row per point, one per attempt."""

from __future__ import annotations

import csv
import io
from typing import Any

from benchmarks.results import METRICS, SUMMARY_FIELDS, valid_runs


def results_csv(data: dict[str, Any]) -> str:
    """One row per point: parameters, status, flags, repeat counts, and per metric the
    median, min, max, bootstrap 95% interval of the median, and quartiles (valid repeats)."""
    spec_fields = ["impl", "protocol", "connections", "idle", "msg_bytes", "pipeline"]
    metric_fields = [f"{m}_{s}" for m in METRICS for s in SUMMARY_FIELDS]
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
            "invalid_repeats",
            "client_errors",
            *metric_fields,
        ]
    )
    for record in data["points"]:
        summary = record.get("summary") or {}
        values = []
        for metric in METRICS:
            stats = summary.get(metric) or {}
            values += [_csv_number(stats.get(s)) for s in SUMMARY_FIELDS]
        valid = valid_runs(record)
        writer.writerow(
            [
                record["key"],
                " ".join(record["experiments"]),
                *(record["spec"][f] for f in spec_fields),
                record["status"],
                record["reason"] or "",
                int(record["client_bound"]),
                len(valid),
                len(record["repeats"]) - len(valid),
                sum(error_count(run) for run in record["repeats"]),
                *values,
            ]
        )
    return out.getvalue()


def repeats_csv(data: dict[str, Any]) -> str:
    """One row per attempt of every point: whether it counted, why not, its error counts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "key",
            "repeat",
            "attempt",
            "status",
            "reason",
            "client_errors",
            "errors_by_kind",
            "loadgen_status",
            "client_bound",
            "rps",
            "cpu_us_per_request",
        ]
    )
    for record in data["points"]:
        for run in record["repeats"]:
            metrics = run.get("metrics") or {}
            errors = run.get("errors") or {}
            writer.writerow(
                [
                    record["key"],
                    run["repeat"],
                    run.get("attempt", 1),
                    "valid" if run.get("valid", True) else "invalid",
                    "; ".join(run.get("problems", ())),
                    error_count(run),
                    " ".join(f"{kind}={count}" for kind, count in sorted(errors.items())),
                    run.get("loadgen_status", ""),
                    int(bool(run.get("client_bound"))),
                    _csv_number(metrics.get("rps")),
                    _csv_number(metrics.get("cpu_us_per_request")),
                ]
            )
    return out.getvalue()


def error_count(run: dict[str, Any]) -> int:
    return sum(int(v) for v in (run.get("errors") or {}).values())


def _csv_number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# -- validation ------------------------------------------------------------------------
