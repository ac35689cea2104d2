"""What ``muxlab load`` prints: the summary, phase lines, and a progress line only on a TTY."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ServerFactory


def load_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "muxlab", "load", "--port", str(port), "--connections", "2",
            "--processes", "1", "--duration", "1.2", "--warmup", "0.2", *extra]  # fmt: skip


def test_summary_and_phase_lines_without_a_terminal(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "r.json"
    proc = subprocess.run(
        load_argv(server.port, "--phase-lines", "--json", str(out)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress line when stderr is not a terminal
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["muxlab load: phase measure", "muxlab load: phase end"]
    summary = "\n".join(lines[2:])
    data = json.loads(out.read_text())
    assert f"{data['requests_ok']:,} ok" in summary
    assert "errors       none" in summary
    assert f"p99 {data['latency_us']['p99']:,.1f} us" in summary


def test_quiet_prints_nothing(start_server: ServerFactory) -> None:
    server = start_server("epoll-lt", "http")
    proc = subprocess.run(
        load_argv(server.port, "--protocol", "http", "--quiet"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")


def read_terminal(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    return output


def test_progress_line_on_a_terminal_only_without_quiet(start_server: ServerFactory) -> None:
    server = start_server("epoll-lt", "echo")
    outputs = {}
    for quiet in (False, True):
        controller, terminal = pty.openpty()
        proc = subprocess.Popen(
            load_argv(server.port, *(["--quiet"] if quiet else [])),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
        )  # fmt: skip
        os.close(terminal)
        try:
            outputs[quiet] = read_terminal(controller, proc, timeout_s=60)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(controller)
    assert b"req/s" in outputs[False]
    assert b"s left" in outputs[False]
    assert b"\r" in outputs[False]
    assert outputs[True] == b""
