"""A Markdown table of ``benchmarks.hold`` result files, one row per server and file.

Run: ``python -m benchmarks.hold_table results/c20k/runs/*.json``. The row label is the
file name up to the server's name (``after-65535-poll.json`` -> ``after-65535``), so the
table of results/c20k/README.md is regenerated from the files, never typed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "run", "server", "opened", "held at end", "errors", "ActiveOpens", "ListenOverflows",
    "TCPSynRetrans", "TCPReqQFullDrop", "accept queue peak/bound", "accepts/wait",
    "RSS / conn (B)", "RSS growth / conn (B)",
)  # fmt: skip


def label(path: Path, server: str) -> str:
    stem = path.stem
    return stem[: -len(server) - 1] if stem.endswith("-" + server) else stem


def row(path: Path, o: dict[str, Any]) -> list[str]:
    if "failed" in o:
        return [label(path, o["server"]), o["server"], "failed: " + o["failed"]]
    k = o["kernel"]
    errors = ", ".join(f"{kind} {n:,}" for kind, n in sorted(o["errors"].items())) or "0"
    return [
        label(path, o["server"]),
        o["server"],
        f"{o['connections_opened']:,}",
        f"{o['connections_held_at_end']:,}",
        errors,
        f"{k['Tcp.ActiveOpens']:,}",
        f"{k['TcpExt.ListenOverflows']:,}",
        f"{k['TcpExt.TCPSynRetrans']:,}",
        f"{k['TcpExt.TCPReqQFullDrop']:,}",
        f"{o['listen_queue']['peak_queued']:,}/{o['listen_queue']['backlog']:,}",
        "-" if o["accepts_per_wait"] is None else f"{o['accepts_per_wait']:.0f}",
        f"{o['rss_over_connections_bytes']:,.0f}",
        f"{o['rss_growth_per_connection_bytes']:,.0f}",
    ]


def table(paths: Sequence[Path]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for path in paths:
        for outcome in json.loads(path.read_text())["outcomes"]:
            lines.append("| " + " | ".join(row(path, outcome)) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    names = list(sys.argv[1:] if argv is None else argv)
    if not names:
        print("usage: python -m benchmarks.hold_table RESULT.json ...", file=sys.stderr)
        return 2
    try:
        print(table([Path(n) for n in names]))
    except (OSError, ValueError, KeyError) as exc:
        print(f"hold_table: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
