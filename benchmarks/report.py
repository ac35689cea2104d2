"""The README's results section, generated from a sweep's ``results.json`` (never typed).

``muxlab report RUN_DIR`` writes Markdown: a few headline sentences with their numbers,
where the run was made, the headline tables (idle connections, server CPU per request
against the reference servers, capacity, fixed-rate latency), each headline ratio with its
bootstrap 95% interval and a verdict against its goal (both from :mod:`benchmarks.stats`),
and links to the charts. Everything in it comes from the file, so the same file always
gives the same bytes; the README embeds it between :data:`BEGIN` and :data:`END`, and a
test regenerates it from the committed reference run.

Only a point's valid repeats (:func:`benchmarks.results.valid_runs`) enter a number; a
point that failed shows as ``failed (reason)``, never as a number.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from benchmarks import capacity, latency
from benchmarks.experiments import IDLE_ACTIVE_CONNECTIONS, RATIO_CONNECTIONS, RATIO_MSG_BYTES
from benchmarks.results import valid_runs
from benchmarks.server_cpu_backends import syscalls
from benchmarks.stats import (
    CONFIDENCE,
    RESAMPLES,
    SEED,
    Ratio,
    Verdict,
    ratio_if_defined,
    ratio_text,
    verdict,
)
from benchmarks.summary import SHORT_READ, SHORT_READ_GOAL, LtEt, ltet_points
from muxlab.atomic import write_text_atomic
from muxlab.errors import UsageError
from muxlab.goals import Goal
from servers import registry

BEGIN = "<!-- muxlab report begin -->"
END = "<!-- muxlab report end -->"


def judge(goal: Goal, ratio: Ratio) -> Verdict:
    """:func:`benchmarks.stats.verdict` of ``ratio`` against ``goal``."""
    return verdict(ratio, goal.comparison, goal.bound)


def goal_markdown(goal: Goal) -> str:
    return goal.text().replace(">=", "&ge;").replace("<=", "&le;")


# The claims of the README's introduction, by what they compare (docs/sweep.md): each
# implementation's goals are its roles in the registry (servers/registry.py).
CHART_TITLES = {
    "active": "active connections",
    "idle": "idle connections",
    "ltet": "LT against ET",
    "peers": "reference peers",
    "capacity": "capacity",
    "latency": "fixed-rate latency",
    "herd": "thundering herd against workers",
    "cores": "throughput and CPU against workers",
}
CROSS_CHARTS = {"syscalls": "system calls per request"}


# -- reading the points ----------------------------------------------------------------


def matching(data: dict[str, Any], **spec: Any) -> list[dict[str, Any]]:
    """Every point whose spec has these values, whatever its status."""
    return [r for r in data["points"] if all(r["spec"][k] == v for k, v in spec.items())]


def grid_record(data: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    """The done or failed point with this spec (pending and skipped ones carry nothing)."""
    for record in matching(data, **spec):
        if record["status"] in ("done", "failed"):
            found: dict[str, Any] = record
            return found
    return None


def values(record: dict[str, Any] | None, metric: str) -> list[float]:
    """One metric over the valid repeats of a point (none for a missing or failed one)."""
    if record is None or record["status"] != "done":
        return []
    found = (run["metrics"].get(metric) for run in valid_runs(record))
    return [float(v) for v in found if v is not None]


def requests_of(run: dict[str, Any]) -> int:
    """Requests the server answered in a repeat's window, as the sweep counts them."""
    replies = run.get("server_replies_window")
    return int(replies if replies is not None else run["requests_ok"])


def syscalls_per_request(record: dict[str, Any] | None) -> list[float]:
    """System calls per request over the valid repeats (:func:`syscalls`'s count), for
    repeats whose counters include the io_uring ones (older files do not)."""
    if record is None or record["status"] != "done":
        return []
    return [
        syscalls(record["spec"]["impl"], run["server_delta"]) / requests_of(run)
        for run in valid_runs(record)
        if "uring_enters" in (run.get("server_delta") or {}) and requests_of(run) > 0
    ]


def failed_text(record: dict[str, Any]) -> str:
    return f"failed ({record.get('reason') or 'no reason recorded'})"


def number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def median_text(samples: list[float], unit: str = "", digits: int = 0) -> str:
    return "-" if not samples else number(statistics.median(samples), digits) + unit


def metric_cell(record: dict[str, Any] | None, metric: str, unit: str = "", digits: int = 0) -> str:
    if record is not None and record["status"] == "failed":
        return failed_text(record)
    return median_text(values(record, metric), unit, digits)


# -- the headline ------------------------------------------------------------------------

IDLE_BASE = {
    "protocol": "echo",
    "connections": IDLE_ACTIVE_CONNECTIONS,
    "msg_bytes": RATIO_MSG_BYTES,
}


def idle_points(
    data: dict[str, Any], backend: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A backend's point at 0 idle and its measured (done or failed) points with idle > 0."""
    base = grid_record(data, impl=backend, idle=0, **IDLE_BASE)
    loaded = [
        r
        for r in matching(data, impl=backend, **IDLE_BASE)
        if r["spec"]["idle"] > 0 and r["status"] in ("done", "failed")
    ]
    return base, loaded


def idle_ratio(data: dict[str, Any], backend: str) -> tuple[int, Ratio] | None:
    """Throughput kept at the most idle connections measured: (idle, ratio to 0 idle)."""
    base, loaded = idle_points(data, backend)
    if base is None or not loaded:
        return None
    top = max(loaded, key=lambda r: r["spec"]["idle"])
    ratio = ratio_if_defined(values(top, "rps"), values(base, "rps"))
    return None if ratio is None else (top["spec"]["idle"], ratio)


def idle_headline(data: dict[str, Any]) -> list[str]:
    """Ratio (a) of every mechanism without a descriptor ceiling (a ceiling is
    :func:`ceiling_headline`'s)."""
    kept = []
    for entry in registry.entries():
        if not entry.roles.idle_ratio or entry.fd_ceiling is not None:
            continue
        backend = entry.name
        found = idle_ratio(data, backend)
        if found is not None:
            kept.append(f"{backend} {ratio_text(found[1])} at {number(found[0])} idle")
    if not kept:
        return []
    return [
        f"Throughput kept with idle connections beside {IDLE_ACTIVE_CONNECTIONS} active ones "
        f"(ratio to 0 idle, {CONFIDENCE:.0%} interval): " + "; ".join(kept) + "."
    ]


def ceiling_headline(data: dict[str, Any]) -> list[str]:
    """Each mechanism with a descriptor ceiling (select's FD_SETSIZE): its highest measured
    idle point, and the points it could not hold."""
    return [
        line
        for entry in registry.entries()
        if entry.roles.idle_ratio and entry.fd_ceiling is not None
        for line in ceiling_line(data, entry.name)
    ]


def ceiling_line(data: dict[str, Any], impl: str) -> list[str]:
    _, loaded = idle_points(data, impl)
    measured = [r["spec"]["idle"] for r in loaded if r["status"] == "done"]
    if not measured:
        return []
    line = (
        f"{impl} was measured up to {number(max(measured))} idle connections (beside "
        f"{IDLE_ACTIVE_CONNECTIONS} active)"
    )
    skipped = [r for r in matching(data, impl=impl) if r["status"] == "skipped"]
    if skipped:
        # The reason of the smallest skipped idle point says where the ceiling is.
        first = min(skipped, key=lambda r: (r["spec"]["idle"] == 0, r["spec"]["idle"]))
        line += f"; {len(skipped)} points past its ceiling were skipped ({first['reason']})"
    return [line + "."]


def ltet_headline(data: dict[str, Any]) -> list[str]:
    """LT against ET strict, then, where the run has it, ET short-read against both (the
    points and ratios are :mod:`benchmarks.summary`'s)."""
    found = ltet_points(data)
    if found is None:
        return []
    spec, lt, et = found.spec, found.lt, found.strict
    eagain = [median_text(values(r, "reads_eagain_per_request"), "", 2) for r in (et, lt)]
    cpu = found.strict_over_lt()
    if "-" in eagain or cpu is None:
        return []
    line = (
        f"Edge- against level-triggered epoll ({number(spec['connections'])} connections, "
        f"{number(spec['msg_bytes'])} B echo): EAGAIN reads per request {eagain[0]} (ET) "
        f"against {eagain[1]} (LT); server CPU per request "
        f"{median_text(values(et, 'cpu_us_per_request'), ' us', 2)} against "
        f"{median_text(values(lt, 'cpu_us_per_request'), ' us', 2)}, ET/LT {ratio_text(cpu)}"
    )
    return [line + short_read_clause(found) + "."]


def short_read_clause(found: LtEt) -> str:
    """``; with --et-drain short-read: ...`` when the run measured that point."""
    short = found.short_read
    to_lt = found.short_read_over_lt()
    to_strict = found.short_read_over_strict()
    if short is None or to_lt is None or to_strict is None:
        return ""
    judged = f" {judge(SHORT_READ_GOAL, to_lt)} (goal {goal_markdown(SHORT_READ_GOAL)})"
    return (
        f"; with `--et-drain {SHORT_READ}`: EAGAIN reads per request "
        f"{median_text(values(short, 'reads_eagain_per_request'), '', 2)}, server CPU per "
        f"request {median_text(values(short, 'cpu_us_per_request'), ' us', 2)}, "
        f"short-read/LT {ratio_text(to_lt)}{judged}, short-read/strict "
        f"{ratio_text(to_strict)}"
    )


def capacity_headline(data: dict[str, Any]) -> list[str]:
    ratios = [
        f"{top} / {bottom} {ratio_text(ratio)}"
        for top, bottom in capacity.ratio_pairs()
        if (ratio := capacity.capacity_ratio(data, top, bottom, capacity.RATIO_COLD)) is not None
    ]
    if not ratios:
        return []
    return [
        f"Capacity at {number(capacity.RATIO_COLD)} cold connections: " + "; ".join(ratios) + "."
    ]


def uring_headline(data: dict[str, Any]) -> list[str]:
    """Each completion loop (io_uring) against the registry's baseline (epoll-lt)."""
    baseline = registry.where(lambda r: r.uring_baseline)
    if not baseline:
        return []
    return [
        line
        for loop in registry.names("completion loop")
        for line in completion_line(data, loop, baseline[0])
    ]


def completion_line(data: dict[str, Any], loop: str, baseline: str) -> list[str]:
    """``loop`` against ``baseline`` at the most connections where both were measured."""
    pairs = []
    for record in matching(data, impl=loop, protocol="echo", idle=0, msg_bytes=RATIO_MSG_BYTES):
        spec = {k: v for k, v in record["spec"].items() if k != "impl"}
        epoll = grid_record(data, impl=baseline, **spec)
        if record["status"] == "done" and epoll is not None and epoll["status"] == "done":
            pairs.append((record["spec"]["connections"], record, epoll))
    if not pairs:
        return []
    conns, uring, epoll = max(pairs, key=lambda p: p[0])
    cpu = ratio_if_defined(values(uring, "cpu_us_per_request"), values(epoll, "cpu_us_per_request"))
    if cpu is None:
        return []
    line = (
        f"{loop} against {baseline} ({number(conns)} connections, {number(RATIO_MSG_BYTES)} B "
        f"echo): server CPU per request ratio {ratio_text(cpu)}"
    )
    calls = [median_text(syscalls_per_request(r), "", 2) for r in (uring, epoll)]
    if "-" not in calls:
        line += f"; system calls per request {calls[0]} against {calls[1]}"
    return [line + "."]


def headline(data: dict[str, Any]) -> list[str]:
    """The results in words, each with its numbers from the file."""
    lines = [
        *idle_headline(data),
        *ceiling_headline(data),
        *ltet_headline(data),
        *capacity_headline(data),
        *uring_headline(data),
    ]
    return [f"- {line}" for line in lines]


# -- sections --------------------------------------------------------------------------


def provenance(data: dict[str, Any]) -> list[str]:
    env = data["environment"]
    pin = data.get("pinning", {})
    plan = data["plan"]
    commit = (env.get("git_commit") or "unknown")[:7]
    return [
        f"Generated by `muxlab report` from run `{data['run_id']}` (`{data['command_line']}`), "
        f"commit `{commit}`: {env.get('cpu_model')}, {env.get('cpus')} CPUs, Linux "
        f"{env.get('kernel')}, Python {env.get('python')}, fd limit "
        f"{number(env.get('fd_limit_hard') or 0)}; server on CPU {pin.get('server_cpu')}, load "
        f"generator on CPU {', '.join(map(str, pin.get('client_cpus', [])))}; closed-loop "
        f"points: {plan['repeats']} repeats of {plan['duration_s']:g} s, of which only valid "
        f"ones count. Ratios are of medians, with a bootstrap {CONFIDENCE:.0%} interval "
        f"({RESAMPLES:,} resamples, seed {SEED}); a goal is met when the whole interval is on "
        "its side, missed when it is wholly on the other side, undecided otherwise.",
    ]


def idle_row(data: dict[str, Any], backend: str, goal: Goal | None) -> str | None:
    base, loaded = idle_points(data, backend)
    if base is None or not loaded:
        return None
    top = max(loaded, key=lambda r: r["spec"]["idle"])
    ratio = ratio_if_defined(values(top, "rps"), values(base, "rps"))
    ratio_cell = "-" if ratio is None else f"**{ratio_text(ratio)}**"
    verdict_cell = "-" if ratio is None or goal is None else judge(goal, ratio)
    cpu = metric_cell(top, "cpu_us_per_request", " us", 1)
    cpu_base = metric_cell(base, "cpu_us_per_request", "", 1)
    return (
        f"| {backend} | {metric_cell(base, 'rps')} | "
        f"{metric_cell(top, 'rps')} at {number(top['spec']['idle'])} idle | "
        f"{ratio_cell} | {goal_markdown(goal) if goal else '-'} | {verdict_cell} | "
        f"{cpu} ({cpu_base} at 0 idle) |"
    )


def idle_section(data: dict[str, Any]) -> list[str]:
    rows = [
        row
        for e in registry.entries()
        if e.roles.idle_ratio and (row := idle_row(data, e.name, e.roles.idle_goal)) is not None
    ]
    if not rows:
        return []
    return [
        f"**Idle connections** (closed loop, saturated): {IDLE_ACTIVE_CONNECTIONS} active "
        f"connections, {RATIO_MSG_BYTES} B echo, throughput at the most idle connections "
        "measured over throughput at 0 idle.",
        "",
        "| backend | 0 idle (req/s) | most idle (req/s) | ratio [95% interval] | goal | verdict "
        "| server CPU/request |",
        "|---|---:|---:|---:|---|---|---:|",
        *rows,
    ]


def cpu_cell(data: dict[str, Any], backend: str, reference: str, conns: int, goal: Goal) -> str:
    spec = {"protocol": "echo", "connections": conns, "idle": 0, "msg_bytes": RATIO_MSG_BYTES}
    mine = grid_record(data, impl=backend, **spec)
    theirs = grid_record(data, impl=reference, **spec)
    failed = [r for r in (mine, theirs) if r is not None and r["status"] == "failed"]
    if failed:
        return failed_text(failed[0])
    ratio = ratio_if_defined(
        values(mine, "cpu_us_per_request"), values(theirs, "cpu_us_per_request")
    )
    return "-" if ratio is None else f"{ratio_text(ratio)} {judge(goal, ratio)}"


def cpu_section(data: dict[str, Any]) -> list[str]:
    rows = []
    for entry in registry.entries():
        goal = entry.roles.cpu_goal
        if goal is None:
            continue
        reference = entry.name
        for backend in registry.where(lambda r: r.cpu_subject):
            cells = [cpu_cell(data, backend, reference, c, goal) for c in RATIO_CONNECTIONS]
            if any(cell != "-" for cell in cells):
                rows.append(
                    f"| {backend} / {reference} | {' | '.join(cells)} | {goal_markdown(goal)} |"
                )
    if not rows:
        return []
    header = " | ".join(f"{number(c)} connections" for c in RATIO_CONNECTIONS)
    return [
        f"**Server CPU per request against the reference servers** (closed loop, saturated; "
        f"{RATIO_MSG_BYTES} B echo; below 1 means muxlab's server is cheaper):",
        "",
        f"| ratio | {header} | goal |",
        "|---|" + "---:|" * len(RATIO_CONNECTIONS) + "---|",
        *rows,
    ]


def capacity_section(data: dict[str, Any]) -> list[str]:
    found = [s for s in capacity.searches(data) if s["status"] in ("done", "skipped", "failed")]
    if not found:
        return []
    colds = sorted({s["spec"]["idle"] for s in found})
    impls = list(dict.fromkeys(s["spec"]["impl"] for s in found))
    slo = "/".join(f"{v:g}" for v in sorted({s["slo_ms"] for s in found}))
    rows = []
    for impl in impls:
        cells = []
        for cold in colds:
            mine = [s for s in found if s["spec"]["impl"] == impl and s["spec"]["idle"] == cold]
            cells.append(capacity.capacity_cell(data, impl, cold, mine))
        rows.append(f"| {impl} | " + " | ".join(cells) + " |")
    lines = [
        "**Capacity** (open loop): the highest offered rate (req/s) at which a backend achieved "
        f"at least 99% of it with p99 at most {slo} ms, with "
        f"{', '.join(sorted({str(s['spec']['connections']) for s in found}))} hot connections "
        "beside the cold ones (median over searches; * = a step was client-bound).",
        "",
        "| backend | " + " | ".join(f"{number(c)} cold" for c in colds) + " |",
        "|---|" + "---:|" * len(colds),
        *rows,
    ]
    ratios = []
    for top, bottom in capacity.ratio_pairs():
        ratio = capacity.capacity_ratio(data, top, bottom, capacity.RATIO_COLD)
        if ratio is not None:
            ratios.append(f"{top} / {bottom} **{ratio_text(ratio)}**")
    if ratios:
        lines += ["", f"Capacity at {number(capacity.RATIO_COLD)} cold: " + "; ".join(ratios) + "."]
    return lines


def latency_section(data: dict[str, Any]) -> list[str]:
    """One table per latency experiment: backends down, connection counts across."""
    lines: list[str] = []
    for name in dict.fromkeys(r["experiment"] for r in latency.records(data)):
        if lines:
            lines.append("")
        lines += latency_table(name, [r for r in latency.records(data) if r["experiment"] == name])
    return lines


def latency_table(name: str, mine: list[dict[str, Any]]) -> list[str]:
    varies = "connections" if len({r["spec"]["connections"] for r in mine}) > 1 else "idle"
    xs = sorted({r["spec"][varies] for r in mine})
    rows = []
    for impl in dict.fromkeys(r["spec"]["impl"] for r in mine):
        by_x = {r["spec"][varies]: r for r in mine if r["spec"]["impl"] == impl}
        rows.append(f"| {impl} | " + " | ".join(latency_cell(by_x.get(x)) for x in xs) + " |")
    what = "connections" if varies == "connections" else "idle connections"
    return [
        f"**Fixed-rate latency, `{name}`** (open loop at {number(mine[0]['spec']['rate_rps'])} "
        f"req/s in total; p50 / p99 / p99.9 in us, corrected, against {what}):",
        "",
        "| backend | " + " | ".join(number(x) for x in xs) + " |",
        "|---|" + "---:|" * len(xs),
        *rows,
    ]


def latency_cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    if record["status"] == "skipped":
        return "skipped"
    if not record["summary"]:
        return str(record["status"])
    cell = " / ".join(number(record["summary"][m]["median"]) for m, _ in latency.PERCENTILES)
    return cell + (" (overloaded)" if record["overloaded"] else "")


def figures(data: dict[str, Any], charts_link: str, charts_dir: Path) -> list[str]:
    links = []
    for experiment in data["plan"]["experiments"]:
        name = experiment["name"]
        if (charts_dir / f"{name}.png").exists():
            title = CHART_TITLES.get(experiment["kind"], experiment["kind"])
            links.append(f"[{name}]({charts_link}/{name}.png) ({title})")
    # Charts drawn across experiments rather than for one (benchmarks/charts_syscalls.py).
    for name, title in CROSS_CHARTS.items():
        if (charts_dir / f"{name}.png").exists():
            links.append(f"[{name}]({charts_link}/{name}.png) ({title})")
    return ["Charts: " + ", ".join(links) + "."] if links else []


def render(data: dict[str, Any], run_dir: Path, relative_to: Path) -> str:
    """The Markdown section; chart links are relative to ``relative_to`` (a directory)."""
    charts_dir = run_dir / "charts"
    charts_link = Path(os.path.relpath(charts_dir, relative_to)).as_posix()
    parts = [
        headline(data),
        provenance(data),
        idle_section(data),
        cpu_section(data),
        capacity_section(data),
        latency_section(data),
        figures(data, charts_link, charts_dir),
    ]
    blocks = ["\n".join(part) for part in parts if part]
    return "\n\n".join(blocks) + "\n"


def replace_section(text: str, section: str, where: str) -> str:
    """``text`` with what lies between the markers replaced by ``section``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise UsageError(f"{where} needs exactly one '{BEGIN}' line followed by one '{END}' line")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{section}{END}{tail}"


def update_file(path: Path, section: str) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    write_text_atomic(path, replace_section(text, section, str(path)))
