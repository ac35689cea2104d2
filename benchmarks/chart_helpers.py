"""What every chart shares: the conventions, the drawing helpers, the axes and captions.

The conventions of a sweep chart (a marker is the median over the valid repeats, the
error bar its bootstrap 95% interval, a pale bar the min-max, a hollow marker a
client-bound point, an x on the bottom edge a failed point) are drawn here once, for
:mod:`benchmarks.plot` (the grid kinds and pytest-benchmark files),
:mod:`benchmarks.charts_open_loop`, :mod:`benchmarks.charts_syscalls` and
:mod:`benchmarks.herd`. Colours and markers come from the implementation registry.
"""

from __future__ import annotations

import math
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

from benchmarks.results import METRICS
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
    draw_markers(ax, xs, med, [r[6] for r in rows], color, marker)


def draw_markers(
    ax: Axes,
    xs: Sequence[float],
    ys: Sequence[float],
    hollow: Sequence[bool],
    color: str,
    marker: str,
    size: float = 6,
) -> None:
    """One marker per point, hollow (white face) where the point is client-bound."""
    for x, y, empty in zip(xs, ys, hollow, strict=True):
        face = "white" if empty else color
        ax.plot([x], [y], marker=marker, color=color, markersize=size,
                markerfacecolor=face, linestyle="none")  # fmt: skip


def draw_impl_series(
    ax: Axes,
    records: Sequence[Record],
    x_of: Callable[[Record], float],
    metric: str,
    impl: str,
    *,
    label: str | None = None,
    scale: float = 1.0,
) -> None:
    """:func:`draw_series` in ``impl``'s registry colour and marker, labelled with its
    name unless ``label`` says otherwise."""
    style = registry.style_of(impl)
    draw_series(ax, records, x_of, metric, label=label or impl, color=style.colour,
                marker=style.marker, scale=scale)  # fmt: skip


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


def size_ticks(ax: Axes, sizes: Sequence[int]) -> None:
    """Tick exactly the measured sizes, as "64 B", "1 KiB", "1 MiB": powers of two
    printed as decimals ("1048576") are unreadable side by side."""
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(FuncFormatter(byte_size))
    ax.xaxis.set_minor_formatter(NullFormatter())


def log_axes(ax: Axes, metric: str) -> None:
    """Connections on a log axis; every metric but throughput on a log axis too (latency
    and CPU span decades, throughput is read as a ratio between lines)."""
    ax.set_xscale("log")
    if metric != "rps":
        ax.set_yscale("log")


def ceiling_label(impl: str) -> str:
    """``select: 1024 (FD_SETSIZE, select(2))``, as its registry entry names its ceiling."""
    return f"{impl}: {registry.get(impl).ceiling_label()}"


def finish_grid_chart(
    fig: Figure, title: str, body: str, data: dict[str, Any], out_dir: Path, stem: str
) -> list[Path]:
    """:func:`finish` for a closed-loop chart: the title says it is closed loop and
    saturated; the caption opens with what that means and closes with the markers' legend
    and the machine line."""
    caption = f"{CLOSED_LOOP_NOTE} {body} {HOLLOW_NOTE}\n{machine_line(data)}"
    return finish(fig, f"{title} ({CLOSED_LOOP})", caption, out_dir, stem)


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
