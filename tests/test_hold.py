"""``python -m benchmarks.hold``: holds connections against a server and reports the ramp's
outcome, the listener's queue, kernel counters and server memory (issue 12, C20K)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from servers.lifecycle import listen_backlog
from tests.conftest import require_tool

ACTIVE = 2
IDLE = 30


def hold_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.hold", *extra]


def test_hold_counts_every_connection_held_and_reads_the_listener(tmp_path: Path) -> None:
    require_tool("ss")
    out = tmp_path / "hold.json"
    proc = subprocess.run(
        hold_argv("--servers", "epoll-lt", "--connections", str(ACTIVE), "--idle", str(IDLE),
                  "--duration", "0.6", "--json", str(out)),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    (held,) = data["outcomes"]
    total = ACTIVE + IDLE
    assert held["server"] == "epoll-lt"
    assert (held["connections_opened"], held["connections_held_at_end"]) == (total, total)
    assert (held["errors"], held["connect_errors"], held["load_exit_status"]) == ({}, 0, 0)
    # The load generator's probe connection is accepted too.
    assert held["server_accepts"] == total + 1
    # ss reports a listener's accept-queue bound as its Send-Q: the server's default
    # backlog is net.core.somaxconn, so the bound is exactly that.
    assert held["listen_queue"]["samples"] > 0
    assert held["listen_queue"]["backlog"] == listen_backlog()
    assert held["kernel"]["Tcp.ActiveOpens"] >= total + 1
    assert held["rss_held_kib"] > 0 and held["rss_before_kib"] > 0
    assert held["rss_over_connections_bytes"] == round(held["rss_held_kib"] * 1024 / total, 1)
    assert data["sysctls"]["net.core.somaxconn"] == str(listen_backlog())
    assert f"held {total:6}" in proc.stdout


def test_unknown_server_is_one_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "hold.json"
    proc = subprocess.run(
        hold_argv("--servers", "epoll-lt,bogus", "--json", str(out)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown ['bogus']" in proc.stderr
    assert not out.exists()
