"""Run ``muxlab serve`` as a child process and talk to it: ready line, counters, stop.

Tests, the load generator's tests, the sweep harness and the notebooks all start servers
the same way, through :class:`ServerProcess`: it waits for the ready line, reads counters
on demand (SIGUSR1, answered by one ``muxlab: counters {json}`` line on stdout), and
always reaps the child, killing it if a polite SIGTERM is not enough.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any, Self

from servers.contract import parse_counters_line, parse_ready_line


class ServerProcessError(RuntimeError):
    """The server did not start, did not answer, or exited unexpectedly."""


def terminate(proc: subprocess.Popen[Any], sig: int, grace_s: float) -> None:
    """Ask ``proc`` to stop with ``sig``; SIGKILL it if it has not exited after ``grace_s``.
    Always reaps it, so no zombie and no orphan outlives the caller."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ChildServer:
    """What every server child (muxlab serve, a peer, nginx) shares: a context manager that
    always stops and reaps it, and its exit status. Subclasses provide start and stop."""

    _proc: subprocess.Popen[Any] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        raise NotImplementedError

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> Self:
        # ``with server.start() as s`` is fine too: never start a second child.
        return self if self._proc is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(ChildServer):
    """A ``muxlab serve`` child; use as a context manager so it is always reaped."""

    def __init__(
        self,
        backend: str,
        protocol: str = "echo",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cpu: int | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 10.0,
        env: dict[str, str] | None = None,
        command: Sequence[str] = ("-m", "muxlab", "serve"),
        impl_option: str = "--backend",
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        # ``command`` and ``impl_option`` let the sweep start a reference peer
        # (``-m servers.peers --impl NAME``) the same way: a peer takes the same address
        # and --cpu options and prints the same ready line and counters.
        self.argv = [
            sys.executable, *command,
            impl_option, backend, "--protocol", protocol,
            "--host", host, "--port", str(port),
        ]  # fmt: skip
        if cpu is not None:
            self.argv += ["--cpu", str(cpu)]
        self.argv += list(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.cwd = cwd  # another source tree's root, to run its ``-m muxlab``
        self.host = host
        self.port = 0
        self.final_counters: dict[str, Any] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_lines: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        if self._proc is not None:
            raise ServerProcessError("this ServerProcess was started already")
        self._proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._pump, args=(self._proc.stdout,), daemon=True).start()
        threading.Thread(target=self._collect_stderr, args=(self._proc.stderr,),
                         daemon=True).start()  # fmt: skip
        line = self._next_line(self.ready_timeout_s)
        ready = parse_ready_line(line or "")
        if ready is None:
            self.stop()
            raise ServerProcessError(
                f"server did not print its ready line; got {line!r}; stderr: {self.stderr!r}"
            )
        self.host = ready.host
        self.port = ready.port
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """SIGTERM, wait, SIGKILL if needed; return the final counters if it printed them."""
        proc = self._proc
        if proc is None:
            return self.final_counters
        terminate(proc, signal.SIGTERM, timeout_s)
        while True:
            line = self._next_line(1.0)
            if line is None:
                break
            counters = parse_counters_line(line)
            if counters is not None:
                self.final_counters = counters
        return self.final_counters

    # -- talking to it -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._proc is not None, "start() first"
        return self._proc.pid

    @property
    def stderr(self) -> str:
        return "".join(self._stderr_lines)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def counters(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """A snapshot from the running server, without disturbing its connections."""
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._next_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise ServerProcessError(f"no counters within {timeout_s} s from {self.pid}")
            counters = parse_counters_line(line)
            if counters is not None:
                return counters

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise ServerProcessError(f"no VmRSS for {self.pid}")

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _collect_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr_lines.append(line)

    def _next_line(self, timeout_s: float) -> str | None:
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
