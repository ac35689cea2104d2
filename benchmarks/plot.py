"""Charts, always drawn from a results file, never from live state (house style 8).

Two inputs: a sweep's ``results.json`` (one chart set per experiment, chosen by its kind)
and pytest-benchmark's ``--benchmark-json`` output (cost against N, one line per backend,
one chart per benchmark group). Every chart is written as PNG and SVG, carries a title,
axis labels with units, a legend, and a caption line saying how to read it.

Conventions in every sweep chart: a marker is the median over the valid repeats, the
error bar is the percentile-bootstrap 95% interval of that median (benchmarks/stats.py;
the inter-quartile range for schema 1 files, which have none), a thin pale bar spans the
min-max of the valid repeats, a hollow marker is a client-bound point (a load process was
>= 90% busy, so the server may have had capacity left), and an x on the bottom edge, in
the line's colour, is a failed point (no valid repeat: no value to draw).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from benchmarks.results import METRICS, read_results_json
from muxlab.errors import UsageError
from muxlab.fdbudget import SELECT_RESERVE
from servers import registry

# Markers of the LT/ET chart, where a marker tells connection counts apart (the colour
# is the implementation's).
# A variant of an implementation (epoll-et with --et-drain short-read) is its own line,
# in its own colour beside the implementation's registry colour.
VARIANT_COLOURS = {"short-read": "yellowgreen"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
HOLLOW_NOTE = (
    "Marker = median of the valid repeats, error bar = bootstrap 95% interval of the median, "
    "pale bar = min-max, hollow = client-bound (a load process >= 90% busy), "
    "x on the bottom edge, in the line's colour = failed point (no valid repeat)."
)
# Every chart of a grid experiment says so: its latency is connections / throughput at
# saturation (Little's law), not what one request costs (the latency experiment shows that).
CLOSED_LOOP = "closed loop, saturated"
CLOSED_LOOP_NOTE = (
    "Closed loop, saturated: each connection sends its next request as soon as the reply "
    "comes, so latency is connections / throughput (Little's law)."
)

Record = dict[str, Any]


# -- drawing helpers -------------------------------------------------------------------


def draw_series(
    ax: Axes,
    records: Sequence[Record],
    x_of: Callable[[Record], float],
    metric: str,
    *,
    label: str,
    color: str,
    marker: str = "o",
    linestyle: str = "-",
    scale: float = 1.0,
) -> None:
    """One line: median per point, its 95% interval, min-max, hollow where client-bound;
    failed points only as an x on the bottom edge, never on the line."""
    rows = []
    for record in sorted(records, key=x_of):
        stats = record["summary"].get(metric, {})
        if record["status"] == "failed":
            mark_failed(ax, x_of(record), color)
        if record["status"] != "done" or stats.get("median") is None:
            continue
        low, high = interval_of(stats)
        rows.append(
            (
                x_of(record),
                stats["median"] / scale,
                low / scale,
                high / scale,
                stats.get("min", low) / scale,
                stats.get("max", high) / scale,
                record["client_bound"],
            )
        )
    if not rows:
        return
    xs = [r[0] for r in rows]
    med = [r[1] for r in rows]
    ax.vlines(xs, [r[4] for r in rows], [r[5] for r in rows], color=color, alpha=0.3, lw=4)
    yerr = [
        [m - r[2] for m, r in zip(med, rows, strict=True)],
        [r[3] - m for m, r in zip(med, rows, strict=True)],
    ]
    ax.errorbar(xs, med, yerr=yerr, color=color, linestyle=linestyle, capsize=3, label=label)
    for x, y, *_, hollow in rows:
        ax.plot(
            [x],
            [y],
            marker=marker,
            color=color,
            markersize=6,
            markerfacecolor="white" if hollow else color,
            linestyle="none",
        )


def interval_of(stats: dict[str, Any]) -> tuple[float, float]:
    """The bootstrap 95% interval of the median; the IQR where there is none (schema 1, or
    a single repeat, where both collapse to the median)."""
    if stats.get("ci_low") is not None and stats.get("ci_high") is not None:
        return float(stats["ci_low"]), float(stats["ci_high"])
    return float(stats["q25"]), float(stats["q75"])


def mark_failed(ax: Axes, x: float, color: str) -> None:
    """A failed point has no value: an x at its abscissa on the bottom edge of the axes."""
    ax.plot(
        [x],
        [0.02],
        marker="x",
        markersize=9,
        markeredgewidth=2,
        color=color,
        linestyle="none",
        transform=ax.get_xaxis_transform(),
        clip_on=False,
    )


def finish(fig: Figure, title: str, caption: str, out_dir: Path, stem: str) -> list[Path]:
    width_chars = int(fig.get_figwidth() * 16)  # about 16 characters of 7.5 pt per inch
    lines = [line for part in caption.split("\n") for line in textwrap.wrap(part, width_chars)]
    fig.suptitle(title, fontsize=12)
    fig.text(0.01, 0.005, "\n".join(lines), fontsize=7.5, ha="left", va="bottom")
    caption_in = 0.14 * len(lines) + 0.15
    fig.tight_layout(rect=(0, caption_in / fig.get_figheight(), 1, 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for path in paths:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return paths


def plain_number(value: float, _position: int | None = None) -> str:
    return f"{value:,.6g}"


def sparse_number(value: float, _position: int | None = None) -> str:
    """A minor tick's label on a log axis only at 1, 2, 3 and 5 times a power of ten, so
    the eight minor ticks of a decade do not print on top of each other."""
    if value <= 0:
        return ""
    lead = value / 10 ** math.floor(math.log10(value))
    return plain_number(value) if round(lead, 6) in (1.0, 2.0, 3.0, 5.0) else ""


def byte_size(value: float, _position: int | None = None) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            return f"{value / scale:,.4g} {unit}"
    return f"{value:,.4g} B"


def label_axes(ax: Axes, xlabel: str, metric: str, title: str) -> None:
    # Numbers as numbers ("6", "1,024"), not "6x10^0": readers compare values across charts.
    ax.xaxis.set_major_formatter(FuncFormatter(plain_number))
    if ax.get_yscale() == "log":
        ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
        low, high = ax.get_ylim()
        # Within one decade there may be no major tick at all: label the minor ones then.
        minor = FuncFormatter(plain_number) if high < 10 * low else NullFormatter()
        ax.yaxis.set_minor_formatter(minor)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(METRICS[metric][0])
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def variant_colour(impl: str, variant: str | None) -> str:
    """The colour of ``impl``'s line, or of its variant's (``None``: the plain point)."""
    own = registry.style_of(impl).colour
    return own if variant is None else VARIANT_COLOURS.get(variant, own)


def group_records(records: Sequence[Record], *fields: str) -> dict[tuple[Any, ...], list[Record]]:
    """Records by the values of ``fields``; groups of one implementation in the registry's
    order (legends), the rest in the order of the file."""
    groups: dict[tuple[Any, ...], list[Record]] = defaultdict(list)
    for record in records:
        # .get: a field newer than the results file (et_drain) groups as absent, None.
        groups[tuple(record["spec"].get(f) for f in fields)].append(record)
    if "impl" not in fields:
        return dict(groups)
    at = fields.index("impl")
    return dict(sorted(groups.items(), key=lambda kv: registry.draw_order(kv[0][at])))


def machine_line(data: dict[str, Any]) -> str:
    env = data["environment"]
    pin = data.get("pinning", {})
    return (
        f"run {data['run_id']}: {env.get('cpu_model')}, {env.get('cpus')} CPUs, Linux "
        f"{env.get('kernel')}, Python {env.get('python')}; server on CPU {pin.get('server_cpu')}, "
        f"client on {pin.get('client_cpus')}; {repeats_text(data)} of "
        f"{data['plan']['duration_s']} s."
    )


def repeats_text(data: dict[str, Any]) -> str:
    """ "3 repeat(s)", or "3-7 repeat(s)" when experiments ask for different counts."""
    wanted = {r.get("repeats_wanted", data["plan"]["repeats"]) for r in data["points"]}
    low, high = min(wanted, default=0), max(wanted, default=0)
    return f"{low} repeat(s)" if low == high else f"{low}-{high} repeat(s)"


# -- sweep charts, one function per experiment kind ------------------------------------


def chart_active(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (("rps", "throughput"), ("p50_us", "median latency"), ("p99_us", "p99 latency"))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for (impl, protocol, size), group in group_records(
            records, "impl", "protocol", "msg_bytes"
        ).items():
            draw_series(
                ax,
                group,
                lambda r: r["spec"]["connections"],
                metric,
                label=f"{impl} ({protocol}{f' {size} B' if size else ''})",
                color=registry.style_of(impl).colour,
                marker=registry.style_of(impl).marker,
            )
        ax.set_xscale("log")
        if metric != "rps":
            ax.set_yscale("log")
        label_axes(ax, "active connections (log)", metric, title)
    axes[0].legend(fontsize=8)
    caption = (
        f"{CLOSED_LOOP_NOTE} "
        "Closed loop, one request in flight per connection. With every connection busy, "
        "each wait call returns many events, so the mechanisms' fixed cost is spread thin "
        "and the lines stay close; latency grows with connections because the server serves "
        f"them in turn. {HOLLOW_NOTE}\n{machine_line(data)}"
    )
    return finish(fig, f"{name}: throughput and latency ({CLOSED_LOOP})", caption, out, name)


def chart_idle(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = (
        ("rps", "throughput relative to 0 idle"),
        ("p99_us", "p99 latency"),
        ("cpu_us_per_request", "server CPU per request"),
        ("wait_cpu_us", "CPU per wait call, dispatch included"),
    )
    groups = group_records(records, "impl", "connections", "msg_bytes")
    ceilings: dict[str, float] = {}  # implementation -> idle count where its line ends
    for ax, (metric, title) in zip(axes.flat, panels, strict=True):
        for (impl, active, _), group in groups.items():
            scale = 1.0
            if metric == "rps":
                base = [r for r in group if r["spec"]["idle"] == 0 and r["status"] == "done"]
                if not base:
                    continue
                scale = base[0]["summary"]["rps"]["median"]
            draw_series(
                ax,
                group,
                lambda r: r["spec"]["idle"],
                metric,
                label=impl,
                color=registry.style_of(impl).colour,
                marker=registry.style_of(impl).marker,
                scale=scale,
            )
            entry = registry.find(impl)
            most = None if entry is None else entry.max_connections(SELECT_RESERVE)
            if most is not None and any(r["status"] == "skipped" for r in group):
                ceilings[impl] = most - active
                mark_ceiling(ax, impl, group, metric, scale, ceilings[impl])
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        if metric != "rps":
            ax.set_yscale("log")
        else:
            ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
            ax.set_ylabel("throughput / throughput at 0 idle")
        label_axes(ax, "idle connections (0, then log)", metric, title)
        if metric == "rps":
            ax.set_ylabel("throughput / throughput at 0 idle")
    axes[0][0].legend(fontsize=8)
    ceiling = "".join(
        f" {impl}'s line ends at its descriptor ceiling (x marker, dotted line at {x:,.0f} "
        f"idle): it cannot watch descriptor {registry.get(impl).fd_ceiling} or above, so "
        "those points are skipped, not measured."
        for impl, x in ceilings.items()
    )
    caption = (
        f"{CLOSED_LOOP_NOTE} "
        "10 active connections plus idle ones that never send. select and poll pass every "
        "registered descriptor to the kernel on every call, so their cost per wait grows "
        "with idle connections and their throughput falls; epoll's wait cost depends on "
        "ready descriptors only, so its line stays flat near 1.0."
        + ceiling
        + f" {HOLLOW_NOTE}\n{machine_line(data)}"
    )
    title = f"{name}: 10 active connections plus idle ones ({CLOSED_LOOP})"
    return finish(fig, title, caption, out, name)


def ceiling_label(impl: str) -> str:
    """``select: 1024 (FD_SETSIZE, select(2))``, as its registry entry names its ceiling."""
    return f"{impl}: {registry.get(impl).ceiling_label()}"


def mark_ceiling(
    ax: Axes, impl: str, group: list[Record], metric: str, scale: float, ceiling_x: float
) -> None:
    colour = registry.style_of(impl).colour
    measured = [r for r in group if r["status"] == "done" and r["summary"][metric]["median"]]
    ax.axvline(ceiling_x, color=colour, linestyle=":", linewidth=1.2)
    if measured:
        last = max(measured, key=lambda r: r["spec"]["idle"])
        y = last["summary"][metric]["median"] / scale
        ax.plot([ceiling_x], [y], marker="X", markersize=11, color=colour, linestyle="none")
        ax.annotate(
            ceiling_label(impl),
            (ceiling_x, y),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
            color=colour,
        )


def chart_ltet(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    panels = (
        ("wait_calls_per_request", "wait calls per request"),
        ("events_per_wait", "events per wait call"),
        ("reads_per_request", "reads per request"),
        ("reads_eagain_per_request", "reads that hit EAGAIN, per request"),
        ("mib_per_s", "throughput"),
        ("cpu_us_per_request", "server CPU per request"),
    )
    groups = group_records(records, "impl", "et_drain", "connections")
    conns_order = sorted({k[2] for k in groups})
    sizes = sorted({r["spec"]["msg_bytes"] for r in records})
    for ax, (metric, title) in zip(axes.flat, panels, strict=True):
        for (impl, drain, conns), group in groups.items():
            style = LINESTYLES[conns_order.index(conns) % len(LINESTYLES)]
            impl_label = impl if drain is None else f"{impl} {drain}"
            draw_series(
                ax,
                group,
                lambda r: r["spec"]["msg_bytes"],
                metric,
                label=f"{impl_label}, {conns} conns",
                color=variant_colour(impl, drain),
                linestyle=style,
                marker=MARKERS[conns_order.index(conns) % len(MARKERS)],
            )
        ax.set_xscale("log", base=2)
        if metric in ("mib_per_s", "cpu_us_per_request"):
            ax.set_yscale("log")
        label_axes(ax, "message size (log 2)", metric, title)
        # Tick exactly the measured sizes, as "64 B", "1 KiB", "1 MiB": powers of two
        # printed as decimals ("1048576") are unreadable side by side.
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(FuncFormatter(byte_size))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0][0].legend(fontsize=8)
    caption = (
        f"{CLOSED_LOOP_NOTE} "
        "Echo, closed loop. Edge-triggered (ET) must read until EAGAIN after each event, so "
        "it pays about one extra recv per wake-up (EAGAIN reads/request near 1) and is never "
        "told twice about the same data; level-triggered (LT) does one recv (up to 64 KiB) "
        "per event and lets the next wait report the rest, so a message larger than one recv "
        "costs it extra wait calls and events. ET short-read (--et-drain short-read) stops "
        "a drain at a recv that returned less than asked, as epoll(7) allows on a stream "
        f"socket, and so skips the EAGAIN recv. {HOLLOW_NOTE}\n{machine_line(data)}"
    )
    title = f"{name}: epoll level-triggered vs edge-triggered ({CLOSED_LOOP})"
    return finish(fig, title, caption, out, name)


def chart_peers(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    protocols = sorted({r["spec"]["protocol"] for r in records})
    fig, axes = plt.subplots(len(protocols), 3, figsize=(15, 4.6 * len(protocols)), squeeze=False)
    panels = (
        ("rps", "throughput"),
        ("cpu_us_per_request", "server CPU per request"),
        ("p99_us", "p99 latency"),
    )
    for row, protocol in zip(axes, protocols, strict=True):
        mine = [r for r in records if r["spec"]["protocol"] == protocol]
        for ax, (metric, title) in zip(row, panels, strict=True):
            for (impl,), group in group_records(mine, "impl").items():
                draw_series(
                    ax,
                    group,
                    lambda r: r["spec"]["connections"],
                    metric,
                    label=impl,
                    color=registry.style_of(impl).colour,
                    marker=registry.style_of(impl).marker,
                )
            ax.set_xscale("log")
            if metric != "rps":
                ax.set_yscale("log")
            label_axes(ax, "connections (log)", metric, f"{protocol}: {title}")
        row[0].legend(fontsize=8)
    caption = (
        f"{CLOSED_LOOP_NOTE} "
        "muxlab's epoll servers against what one would otherwise pick: asyncio (protocol and "
        "streams APIs), uvloop (libuv, in C) and nginx (one worker, HTTP). Server CPU per "
        "request is the server's user+system CPU in the window over the requests it served: "
        "it stays comparable when the client is the bottleneck. Lower is better. "
        f"{HOLLOW_NOTE}\n{machine_line(data)}"
    )
    title = f"{name}: muxlab against reference servers ({CLOSED_LOOP})"
    return finish(fig, title, caption, out, name)


CHARTS: dict[str, Callable[[dict[str, Any], str, list[Record], Path], list[Path]]] = {
    "active": chart_active,
    "idle": chart_idle,
    "ltet": chart_ltet,
    "peers": chart_peers,
}


def plot_results(data: dict[str, Any], out_dir: Path) -> list[Path]:
    # Imported here: that module draws with this one's helpers.
    from benchmarks.charts_open_loop import OPEN_LOOP_CHARTS
    from benchmarks.herd import SCALING_CHARTS

    own_charts = {**OPEN_LOOP_CHARTS, **SCALING_CHARTS}
    paths: list[Path] = []
    for experiment in data["plan"]["experiments"]:
        name = experiment["name"]
        if experiment["kind"] in own_charts:
            paths += own_charts[experiment["kind"]](data, name, out_dir)
            continue
        records = [r for r in data["points"] if name in r["experiments"]]
        if any(r["status"] == "done" for r in records):
            paths += CHARTS[experiment["kind"]](data, name, records, out_dir)
    from benchmarks.charts_syscalls import chart_syscalls  # draws with this module's helpers

    return paths + chart_syscalls(data, out_dir)


# -- pytest-benchmark JSON -------------------------------------------------------------


def plot_benchmark_json(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """One chart per group: the timed cost (or a recorded rate) against N, per backend."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or "ungrouped"].append(bench)
    paths: list[Path] = []
    machine = data.get("machine_info", {})
    where = (
        f"{machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, Python "
        f"{machine.get('python_version', '?')}, {data.get('datetime', '')}"
    )
    for group, benches in sorted(groups.items()):
        if not all("backend" in bench["extra_info"] for bench in benches):
            # The load generator's own benchmarks compare clients, not backends: their
            # numbers are in extra_info and docs/loadgen.md, not on a per-backend chart.
            continue
        x_key = benches[0]["extra_info"].get("x", "n_fds")
        y_key = benches[0]["extra_info"].get("y")
        fig, ax = plt.subplots(figsize=(8, 5.2))
        lines: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for bench in benches:
            info = bench["extra_info"]
            if y_key:
                value = float(info[y_key])
                lines[info["backend"]].append((float(info[x_key]), value, value, value))
            else:
                stats = bench["stats"]
                lines[info["backend"]].append(
                    (
                        float(info[x_key]),
                        stats["median"] * 1e6,
                        stats["q1"] * 1e6,
                        stats["q3"] * 1e6,
                    )
                )
        for backend, points in sorted(lines.items(), key=lambda kv: registry.draw_order(kv[0])):
            points.sort()
            xs, med, lo, hi = zip(*points, strict=True)
            ax.errorbar(
                xs,
                med,
                yerr=[
                    [m - q for m, q in zip(med, lo, strict=True)],
                    [q - m for m, q in zip(med, hi, strict=True)],
                ],
                color=registry.style_of(backend).colour,
                marker=registry.style_of(backend).marker,
                capsize=3,
                label=backend,
            )
        # The file says a ceiling was reached ("select_ceiling", pytest-benchmark's
        # extra_info); the registry says whose, and how to draw it.
        if benches[0]["extra_info"].get("select_ceiling"):
            for entry in registry.entries():
                if entry.name in lines and entry.fd_ceiling is not None:
                    mark_benchmark_ceiling(ax, entry.name, entry.fd_ceiling)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(benches[0]["extra_info"].get("x_label", "registered descriptors N (log)"))
        ax.set_ylabel(benches[0]["extra_info"].get("y_label", "time per pass (us, log)"))
        ax.set_title(group, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        caption = benches[0]["extra_info"].get("caption", "") + f"\n{where}"
        stem = "bench-" + re.sub(r"[^A-Za-z0-9]+", "-", group).strip("-")
        paths += finish(fig, f"pytest-benchmark: {group}", caption, out_dir, stem)
    return paths


def mark_benchmark_ceiling(ax: Axes, impl: str, ceiling: int) -> None:
    """A dotted line at the descriptor count ``impl`` cannot reach, labelled."""
    colour = registry.style_of(impl).colour
    ax.axvline(ceiling, color=colour, linestyle=":")
    ax.annotate(
        ceiling_label(impl),
        (ceiling, 0.9),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        color=colour,
    )


def plot_file(path: Path, out_dir: Path | None) -> list[Path]:
    """Charts from a sweep results file or a pytest-benchmark JSON file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if isinstance(raw, dict) and "benchmarks" in raw and "machine_info" in raw:
        return plot_benchmark_json(raw, out_dir or path.parent / "charts")
    data = read_results_json(path)
    return plot_results(data, out_dir or path.parent / "charts")
