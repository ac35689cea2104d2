"""Charts of the open-loop kinds, drawn from ``results.json`` only (house style 8).

``capacity``: for each cold count, achieved against offered rate (with the line
achieved = offered) above, p50 and p99 against offered rate below, one line per backend
and per search, the knee (the capacity) starred. ``latency``: p50, p99 and p99.9 at one
fixed offered rate against connections (or idle connections), one line per backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

from benchmarks import capacity, latency
from benchmarks.chart_helpers import draw_markers, finish, plain_number, sparse_number
from servers import registry

Record = dict[str, Any]
HOLLOW = "hollow = client-bound (a load-generator process >= 90% busy)"


def machine_line(data: dict[str, Any], name: str) -> str:
    """Where and how: the machine, the pinning, and this experiment's own window."""
    env = data["environment"]
    pin = data.get("pinning", {})
    experiment = next(e for e in data["plan"]["experiments"] if e["name"] == name)
    spec = experiment.get("open_loop") or {}
    return (
        f"run {data['run_id']}: {env.get('cpu_model')}, {env.get('cpus')} CPUs, Linux "
        f"{env.get('kernel')}, Python {env.get('python')}; server on CPU {pin.get('server_cpu')}, "
        f"client on {pin.get('client_cpus')}; {spec.get('repeats', 1)} repeat(s), each step a "
        f"{spec.get('window_s', '?')} s window after {spec.get('warmup_s', '?')} s of warm-up."
    )


def style_axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    """Numbers as numbers on both axes; call after drawing, when the limits are known."""
    for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        axis.set_major_formatter(FuncFormatter(plain_number))
        # Within one decade a log axis may have no major tick: label the minor ones then.
        within_decade = low > 0 and high < 10 * low
        axis.set_minor_formatter(FuncFormatter(sparse_number) if within_decade else NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def draw_search(
    top: Axes, bottom: Axes, search: Record, color: str, marker: str, label: bool
) -> None:
    """One search: its steps in offered order, and its knee starred."""
    steps = sorted(search["steps"], key=lambda s: s["offered_rps"])
    xs = [s["offered_rps"] for s in steps]
    hollow = [s["client_bound"] for s in steps]
    name = search["spec"]["impl"] if label else None
    achieved = [s["achieved_rps"] for s in steps]
    p99 = [s["p99_us"] for s in steps]
    top.plot(xs, achieved, color=color, label=name)
    draw_markers(top, xs, achieved, hollow, color, marker, size=5)
    bottom.plot(xs, p99, color=color, label=None if name is None else f"{name} p99")
    bottom.plot(xs, [s["p50_us"] for s in steps], color=color, linestyle="--", alpha=0.7)
    draw_markers(bottom, xs, p99, hollow, color, marker, size=5)
    knee = search["capacity_rps"]
    if knee is not None:
        at = next(s for s in steps if s["offered_rps"] == knee)
        for ax, y in ((top, at["achieved_rps"]), (bottom, at["p99_us"])):
            ax.plot([knee], [y], marker="*", markersize=15, color=color, markeredgecolor="black")


def chart_capacity(data: dict[str, Any], name: str, out: Path) -> list[Path]:
    mine = [s for s in capacity.searches(data) if s["experiment"] == name and s["steps"]]
    if not mine:
        return []
    colds = sorted({s["spec"]["idle"] for s in mine})
    impls = sorted(dict.fromkeys(s["spec"]["impl"] for s in mine), key=registry.draw_order)
    hot = sorted({s["spec"]["connections"] for s in mine})
    slo_ms = mine[0]["slo_ms"]
    width_in = max(9.0, 1 + 5.2 * len(colds))
    fig, axes = plt.subplots(2, len(colds), figsize=(width_in, 9.5), squeeze=False)
    for col, cold in enumerate(colds):
        top, bottom = axes[0][col], axes[1][col]
        offered: list[float] = []
        for impl in impls:
            style = registry.style_of(impl)
            drawn = [s for s in mine if s["spec"]["impl"] == impl and s["spec"]["idle"] == cold]
            for n, search in enumerate(drawn):
                draw_search(top, bottom, search, style.colour, style.marker, n == 0)
                offered += [s["offered_rps"] for s in search["steps"]]
        span = [min(offered), max(offered)]
        top.plot(span, span, color="black", linestyle=":", linewidth=1, label="achieved = offered")
        top.plot(
            [],
            [],
            marker="*",
            markersize=12,
            color="white",
            markeredgecolor="black",
            linestyle="none",
            label="knee (capacity)",
        )
        bottom.axhline(slo_ms * 1000, color="black", linestyle=":", linewidth=1, label="SLO")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_yscale("log")
        style_axes(top, "offered rate (req/s, log)", "achieved rate (req/s, log)", f"{cold:,} cold")
        style_axes(
            bottom,
            "offered rate (req/s, log)",
            "latency (us, log): p99 solid, p50 dashed",
            f"{cold:,} cold",
        )
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    caption = (
        f"Open loop: {', '.join(map(str, hot))} hot connections carry requests at a fixed "
        "offered rate while the cold ones stay open and silent (Banga and Mogul 1998; Gammo, "
        "Brecht et al. 2004). Below the knee a backend keeps up: its points sit on the dotted "
        "line and latency is flat. Past it achieved flattens and latency climbs. The star is "
        f"the capacity: the highest offered rate with achieved >= 99% and p99 <= {slo_ms:g} ms "
        "(the SLO line). Rates were chosen by the search (coarse steps, then bisection near "
        f"the knee), so points cluster there. Latency is corrected (from the intended send "
        f"time). {HOLLOW}.\n{machine_line(data, name)}"
    )
    title = f"{name}: achieved rate and latency against offered rate (open loop)"
    return finish(fig, title, caption, out, name)


def chart_latency(data: dict[str, Any], name: str, out: Path) -> list[Path]:
    mine = [r for r in latency.records(data) if r["experiment"] == name and r["repeats"]]
    if not mine:
        return []
    varies = "connections" if len({r["spec"]["connections"] for r in mine}) > 1 else "idle"
    rate = mine[0]["spec"]["rate_rps"]
    impls = sorted(dict.fromkeys(r["spec"]["impl"] for r in mine), key=registry.draw_order)
    fig, axes = plt.subplots(1, len(latency.PERCENTILES), figsize=(15, 5))
    for ax, (metric, label) in zip(axes, latency.PERCENTILES, strict=True):
        for impl in impls:
            line = sorted(
                (r for r in mine if r["spec"]["impl"] == impl), key=lambda r: r["spec"][varies]
            )
            xs = [r["spec"][varies] for r in line]
            stats = [r["summary"][metric] for r in line]
            med = [s["median"] for s in stats]
            color = registry.style_of(impl).colour
            ax.errorbar(
                xs,
                med,
                yerr=[
                    [m - s["min"] for m, s in zip(med, stats, strict=True)],
                    [s["max"] - m for m, s in zip(med, stats, strict=True)],
                ],
                color=color,
                capsize=3,
                label=impl,
            )
            marker = registry.style_of(impl).marker
            draw_markers(ax, xs, med, [r["client_bound"] for r in line], color, marker, size=5)
            over = [(x, m) for x, m, r in zip(xs, med, line, strict=True) if r["overloaded"]]
            if over:
                ax.plot(*zip(*over, strict=True), marker="x", markersize=11, color=color, ls="none")
        if varies == "idle":
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlim(left=0)
        else:
            ax.set_xscale("log")
        ax.set_yscale("log")
        xlabel = (
            "connections (log)" if varies == "connections" else "idle connections (0, then log)"
        )
        style_axes(ax, xlabel, f"{label} latency (us, log)", label)
    axes[0].legend(fontsize=8)
    caption = (
        f"Open loop at a fixed {rate:,.0f} req/s in total, spread over the connections, below "
        "every backend's capacity, so no queue builds up: latency (from the intended send "
        "time) is what one request costs, and its growth with connections is the mechanism's "
        "(select and poll scan every registered descriptor per wait; epoll does not). Compare "
        "the closed-loop charts, where latency at many connections is connections / "
        f"throughput (Little's law). Marker = median of repeats, bar = min-max, {HOLLOW}, "
        f"x = overloaded (achieved < 99% of offered).\n{machine_line(data, name)}"
    )
    what = "connections" if varies == "connections" else "idle connections"
    title = f"{name}: latency against {what} at a fixed {rate:,.0f} req/s, open loop"
    return finish(fig, title, caption, out, name)


# experiment kind -> chart; benchmarks.plot dispatches the open-loop kinds here.
OPEN_LOOP_CHARTS: dict[str, Callable[[dict[str, Any], str, Path], list[Path]]] = {
    "capacity": chart_capacity,
    "latency": chart_latency,
}
