"""A Markdown table of a ``benchmarks.c50k`` result file: one row per server, refused ones too.

Run: ``python -m benchmarks.c50k_table results/c50k/c50k.json``; the table in
results/c50k/README.md is this output, never typed. "RSS / conn" is the growth of the sum
of the server workers' RSS (nginx: its workers, not its master; muxlab: the worker
processes, not their parent) from before the ramp to the middle of the hold, over the
connections asked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "server", "workers", "asked", "held at end", "errors", "connections per worker",
    "workers' RSS before / held (MiB)", "RSS / conn (B)", "ListenOverflows",
    "TCPSynRetrans", "accept queue peak/bound", "ramp (s)",
)  # fmt: skip


def row(asked: int, o: dict[str, Any]) -> list[str]:
    if "failed" in o:
        return [o["server"], "-", f"{asked:,}", "failed: " + o["failed"]]
    k = o["kernel"]
    workers = o["workers"]
    errors = ", ".join(f"{kind} {n:,}" for kind, n in sorted(o["errors"].items())) or "0"
    before = sum(w["rss_before_kib"] for w in workers) / 1024
    held = sum(w["rss_held_kib"] for w in workers) / 1024
    return [
        o["server"],
        str(len(workers)),
        f"{asked:,}",
        f"{o['connections_held_at_end']:,}",
        errors,
        " + ".join(f"{w['connections']:,}" for w in workers),
        f"{before:,.0f} / {held:,.0f}",
        f"{o['workers_rss_growth_per_connection_bytes']:,.0f}",
        f"{k['TcpExt.ListenOverflows']:,}",
        f"{k['TcpExt.TCPSynRetrans']:,}",
        f"{o['listen_queue']['peak_queued']:,}/{o['listen_queue']['backlog']:,}",
        f"{o['ramp_s']:.1f}",
    ]


def table(data: dict[str, Any]) -> str:
    asked = data["spec"]["connections"]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(asked, o)) + " |" for o in data["outcomes"]]
    lines += [f"| {name} | refused: {why} |" for name, why in data["refused"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    if len(names) != 1:
        print("usage: python -m benchmarks.c50k_table RESULT.json", file=sys.stderr)
        return 2
    try:
        print(table(json.loads(Path(names[0]).read_text())))
    except (OSError, ValueError, KeyError) as exc:
        print(f"c50k_table: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
