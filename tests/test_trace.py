"""``muxlab trace``: the timeline's JSON shows LT and ET differing exactly where epoll(7) says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from muxlab.cli import main

Step = tuple[str, int | str]


def trace_json(tmp_path: Path, backend: str, *extra: str) -> dict[str, Any]:
    path = tmp_path / f"{backend}.json"
    argv = ["trace", "--backend", backend, "--sizes", "100,3000", "--read-bytes", "1024"]
    assert main([*argv, *extra, "--json", str(path)]) == 0
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def conn_fd(data: dict[str, Any], number: int = 1) -> int:
    return next(int(fd) for fd, role in data["fds"].items() if role == f"conn {number}")


def io_after_each_wait(data: dict[str, Any], fd: int) -> list[list[Step]]:
    """For every wait that reported ``fd``: the recvs/sends on ``fd`` until the next wait."""
    rounds: list[list[Step]] = []
    current: list[Step] | None = None
    for e in data["entries"]:
        if e["actor"] != "server":
            continue
        if e["call"] == "wait":
            current = [] if any(reported == fd for reported, _ in e["events"]) else None
            if current is not None:
                rounds.append(current)
        elif current is not None and e["fd"] == fd and e["call"] in ("recv", "send", "sendmsg"):
            current.append((e["call"], "EAGAIN" if e["eagain"] else e["nbytes"]))
    return rounds


LEVEL_TRIGGERED = [
    [("recv", 100), ("send", 100)],
    # 3000 bytes with 1024-byte reads: reported again after each partial read.
    [("recv", 1024), ("send", 1024)],
    [("recv", 1024), ("send", 1024)],
    [("recv", 952), ("send", 952)],
    [("recv", 0)],
]
EDGE_TRIGGERED = [
    # Reported once per arrival; the loop reads until EAGAIN.
    [("recv", 100), ("send", 100), ("recv", "EAGAIN")],
    [("recv", 1024), ("send", 1024), ("recv", 1024), ("send", 1024), ("recv", 952),
     ("send", 952), ("recv", "EAGAIN")],
    [("recv", 0)],
]  # fmt: skip


@pytest.mark.parametrize("backend", ["epoll-lt", "poll", "select"])
def test_level_triggered_reports_the_fd_again_after_each_partial_read(
    tmp_path: Path, backend: str
) -> None:
    data = trace_json(tmp_path, backend)
    assert io_after_each_wait(data, conn_fd(data)) == LEVEL_TRIGGERED
    assert data["summary"]["recvs_eagain"] == 0


def test_edge_triggered_drains_each_event_and_ends_with_eagain(tmp_path: Path) -> None:
    data = trace_json(tmp_path, "epoll-et")
    assert io_after_each_wait(data, conn_fd(data)) == EDGE_TRIGGERED


def test_lt_and_et_differ_only_in_waits_and_eagains(tmp_path: Path) -> None:
    lt = trace_json(tmp_path, "epoll-lt")["summary"]
    et = trace_json(tmp_path, "epoll-et")["summary"]
    for same in ("accepts", "recvs", "sends", "bytes_in", "bytes_out"):
        assert lt[same] == et[same], same
    # LT: one more wait per extra 1 KiB of the 3000-byte message; ET: one EAGAIN per
    # event on the connection (2 messages). On the listener both stop at EAGAIN: ET drains
    # the backlog and muxlab's LT loop accepts in batches (servers/loop.py, ACCEPT_BATCH).
    assert lt["wait_calls"] - et["wait_calls"] == 2
    assert (lt["recvs_eagain"], et["recvs_eagain"]) == (0, 2)
    assert (lt["accepts_eagain"], et["accepts_eagain"]) == (1, 1)


def test_summary_agrees_with_the_servers_own_counters(tmp_path: Path) -> None:
    data = trace_json(tmp_path, "epoll-et", "--connections", "3")
    summary, counters = data["summary"], data["server_counters"]
    assert summary["bytes_in"] == summary["bytes_out"] == 3 * (100 + 3000)
    assert summary["wait_calls"] == counters["wait_calls"]
    assert summary["recvs"] == counters["reads"]
    assert summary["recvs_eagain"] == counters["reads_eagain"]
    assert summary["accepts"] == counters["accepts"] == 3
    assert [data["fds"][str(conn_fd(data, n))] for n in (1, 2, 3)] == ["conn 1", "conn 2", "conn 3"]
    assert data["schema_version"] == 1 and data["environment"]["kernel"]
    assert data["config"]["sizes_bytes"] == [100, 3000]


def test_text_timeline_marks_eagain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--backend", "epoll-et", "--sizes", "10"]) == 0
    out = capsys.readouterr().out
    assert "wait -> " in out and "(conn 1) IN" in out
    assert "recv fd" in out and "EAGAIN" in out
    assert "summary: wait_calls=" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sizes", "10,x"], "--sizes must be comma-separated integers"),
        (["--sizes", "0"], "every --sizes value"),
        (["--connections", "0"], "--connections must be"),
        (["--read-bytes", "0"], "--read-bytes must be positive"),
        (["--backend", "kqueue"], "invalid choice"),
        (["--json", "/"], "--json / is a directory"),
        (["--json", "/proc/self/cmdline/x.json"], "is not a directory"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "trace", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("muxlab trace: error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
