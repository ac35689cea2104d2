"""``run_load_in_child``: :func:`loadgen.run_load` in a process of its own, typed both ways.

The sweep measures servers with the load generator in a separate process: its parent
process then is not the sweep (``parent_cpu`` measures the load generator alone), its
workers start from a clean interpreter, and a user can swap it for another program with
the same command line (``muxlab sweep --loadgen``). That is an implementation detail
behind this function: it takes a :class:`~loadgen.config.LoadConfig` and gives back a
:class:`~loadgen.result.LoadResult`, the same types as :func:`loadgen.run_load`. The
command line (:func:`loadgen.options.config_to_argv`), the phase lines
(:mod:`loadgen.phase_lines`) and the result file (``LoadResult.from_json``) in between
are each written and read by their one owner in this package.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from loadgen.config import LoadConfig
from loadgen.options import config_to_argv
from loadgen.phase_lines import Phase, parse_phase_line
from loadgen.result import LoadResult

LOAD_COMMAND: tuple[str, ...] = (sys.executable, "-m", "muxlab", "load")
# After SIGINT the load generator tells its workers to stop and writes what it measured
# (LOAD_CONTRACT: exit 130); past this it is killed.
STOP_GRACE_S = 5.0


class LoadChildError(Exception):
    """The child produced nothing to read: silent too long, or no result file."""


@dataclass(frozen=True)
class ChildRun:
    status: int  # the child's exit status, as ``muxlab load``'s (0, 1, 3, 130)
    result: LoadResult | None  # None when the child wrote no result file
    stderr_tail: str  # its last line on stderr ("" when none): why it failed, if it did


class LinePump:
    """Lines of a child's stdout through a thread, so that reading them can time out."""

    _EOF = object()

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(self._EOF)

    def next(self, timeout_s: float) -> str | None:
        """The next line; ``None`` at end of stream; :class:`LoadChildError` on timeout."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise LoadChildError(f"load generator silent for {timeout_s:.0f} s") from None
        return None if item is self._EOF else str(item)


def run_load_in_child(
    config: LoadConfig,
    json_path: Path,
    on_phase: Callable[[Phase], None],
    deadline_s: float,
    command: Sequence[str] = LOAD_COMMAND,
) -> ChildRun:
    """Run ``config`` in a child (``command`` plus the config's options), calling
    ``on_phase`` as its window opens and closes; the result is also left in
    ``json_path``. The child is always reaped, whatever ``on_phase`` raises;
    :class:`LoadChildError` when it stayed silent past ``deadline_s`` seconds."""
    argv = [*command, *config_to_argv(config), "--json", str(json_path), "--quiet",
            "--phase-lines"]  # fmt: skip
    json_path.unlink(missing_ok=True)  # a file of an earlier run must not pass for this one's
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            assert proc.stdout is not None
            _follow(LinePump(proc.stdout), on_phase, time.monotonic() + deadline_s)
            status = proc.wait()
        finally:
            _stop(proc)
        stderr.seek(0)
        lines = stderr.read().strip().splitlines()
    return ChildRun(status, _read_result(json_path), lines[-1] if lines else "")


def _follow(lines: LinePump, on_phase: Callable[[Phase], None], deadline: float) -> None:
    while (line := lines.next(deadline - time.monotonic())) is not None:
        phase = parse_phase_line(line)
        if phase is not None:
            on_phase(phase)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGINT (the load generator writes what it has and exits), then SIGKILL; reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            proc.stdout.close()


def _read_result(json_path: Path) -> LoadResult | None:
    try:
        text = json_path.read_text()
    except FileNotFoundError:
        return None
    try:
        return LoadResult.from_json(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise LoadChildError(f"{json_path}: {exc}") from None
