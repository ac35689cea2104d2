"""``muxlab load`` when things go wrong: wrong replies, dead, stopped and stalled servers,
Ctrl-C, bad input, and result files that must never be half written."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from loadgen import LoadConfig, run_load
from loadgen.config import LoadProtocol
from loadgen.phase_lines import phase_line
from loadgen.protocols.echo import echo_filler, echo_message
from servers.process import ServerProcess
from servers.protocols import HTTP_OK
from tests.conftest import ServerFactory

PHASE_MEASURE = phase_line("measure")
PHASE_END = phase_line("end")


# -- test doubles: servers that answer wrongly ---------------------------------------------


DoubleFactory = Callable[[type[socketserver.BaseRequestHandler]], int]


class _Double(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def double_server() -> Iterator[DoubleFactory]:
    """Start a threaded loopback server with a given handler; shut down at teardown."""
    started: list[_Double] = []

    def start(handler: type[socketserver.BaseRequestHandler]) -> int:
        server = _Double(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        port: int = server.server_address[1]
        return port

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


CORRUPT_OFFSET = 64 * 50 + 30  # a filler byte of the 51st message of one connection


class CorruptOneByteEcho(socketserver.BaseRequestHandler):
    """Echo, except that one byte, once, on one connection, comes back flipped."""

    lock = threading.Lock()
    done = False

    def handle(self) -> None:
        seen = 0
        while data := self.request.recv(65536):
            out = bytearray(data)
            with CorruptOneByteEcho.lock:
                if not CorruptOneByteEcho.done and seen <= CORRUPT_OFFSET < seen + len(out):
                    out[CORRUPT_OFFSET - seen] ^= 0x40
                    CorruptOneByteEcho.done = True
            seen += len(data)
            self.request.sendall(out)


class CrossTalkEcho(socketserver.BaseRequestHandler):
    """Answers the first message of each connection with connection 0's first message."""

    def handle(self) -> None:
        data = self.request.recv(65536)
        if data:
            self.request.sendall(echo_message(0, 0, echo_filler(len(data))) + data[64:])
        while data := self.request.recv(65536):
            self.request.sendall(data)


class ClosesSilentConnections(socketserver.BaseRequestHandler):
    """Echo, but a connection silent for its first 0.5 s is closed (an idle timeout)."""

    def handle(self) -> None:
        self.request.settimeout(0.5)
        try:
            data = self.request.recv(65536)
        except TimeoutError:
            return
        self.request.settimeout(None)
        while data:
            self.request.sendall(data)
            data = self.request.recv(65536)


def http_double(reply: bytes) -> type[socketserver.BaseRequestHandler]:
    class FixedReply(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            pending = b""
            while data := self.request.recv(65536):
                pending += data
                requests = pending.count(b"\r\n\r\n")
                pending = pending.rsplit(b"\r\n\r\n", 1)[-1]
                if requests:
                    self.request.sendall(reply * requests)

    return FixedReply


def double_run(port: int, protocol: LoadProtocol, connections: int = 2) -> dict[str, int]:
    result = run_load(
        LoadConfig(port=port, protocol=protocol, connections=connections, processes=1,
                   duration_s=0.5, warmup_s=0.0, timeout_s=5.0)
    )  # fmt: skip
    assert result.exit_status == 1
    return result.errors


def test_one_corrupted_byte_is_detected(double_server: DoubleFactory) -> None:
    CorruptOneByteEcho.done = False
    errors = double_run(double_server(CorruptOneByteEcho), "echo")
    assert CorruptOneByteEcho.done
    assert errors == {"echo_corrupt": 1}


def test_cross_talk_is_detected(double_server: DoubleFactory) -> None:
    errors = double_run(double_server(CrossTalkEcho), "echo", connections=3)
    # Connection 0 gets its own message back; the two others get connection 0's.
    assert errors == {"echo_crosstalk": 2}


def test_idle_connections_closed_by_the_server_are_reported(
    double_server: DoubleFactory,
) -> None:
    port = double_server(ClosesSilentConnections)
    result = run_load(LoadConfig(port=port, connections=2, idle=3, processes=1,
                                 duration_s=1.0, warmup_s=0.0))  # fmt: skip
    assert result.connections.idle == 3
    assert result.connections.idle_open_at_end == 0
    assert result.errors == {"idle_closed": 3}
    assert result.exit_status == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (HTTP_OK.replace(b"200 OK", b"500 Internal Server Error"), "http_status"),
        (
            HTTP_OK.replace(b"Content-Length: 18", b"Content-Length: 18\r\nContent-Length: 9"),
            "http_framing",
        ),
        (HTTP_OK.replace(b"Content-Length: 18", b"Content-Length: 5"), "unexpected_data"),
    ],
)
def test_bad_http_replies_are_detected(
    double_server: DoubleFactory, reply: bytes, kind: str
) -> None:
    errors = double_run(double_server(http_double(reply)), "http")
    assert errors == {kind: 2}


def test_a_good_double_passes(double_server: DoubleFactory) -> None:
    """The doubles themselves are right apart from their one fault."""
    port = double_server(http_double(HTTP_OK))
    result = run_load(LoadConfig(port=port, protocol="http", connections=2, processes=1,
                                 duration_s=0.3, warmup_s=0.0))  # fmt: skip
    assert result.errors == {}
    assert result.requests_ok > 0


# -- faults of a real server, through the CLI ----------------------------------------------


class LoadProcess:
    """``muxlab load`` as a child, its stdout lines readable with a timeout."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "muxlab", "load", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a shell job would have
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, wanted: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, f"exited before {wanted!r}: {self.stderr()}"
            if line == wanted:
                return

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


LoadFactory = Callable[..., LoadProcess]


@pytest.fixture
def load_process() -> Iterator[LoadFactory]:
    started: list[LoadProcess] = []

    def start(*args: str) -> LoadProcess:
        proc = LoadProcess(*args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def load_args(server: ServerProcess, json_path: Path, *extra: str) -> list[str]:
    return ["--port", str(server.port), "--processes", "1", "--json", str(json_path),
            "--phase-lines", "--quiet", *extra]  # fmt: skip


def test_killed_server_ends_the_run_with_errors(
    start_server: ServerFactory, load_process: LoadFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "killed.json"
    load = load_process(*load_args(server, out, "--connections", "4", "--duration", "2",
                                   "--warmup", "0.2", "--timeout", "2"))  # fmt: skip
    load.wait_for_line(PHASE_MEASURE)
    time.sleep(0.3)
    os.kill(server.pid, signal.SIGKILL)
    # Bounded: the window (2 s) plus the timeout (2 s) plus generous start-up slack.
    assert load.wait(timeout_s=30) == 1
    data = json.loads(out.read_text())
    assert data["errors"], data["errors"]
    assert set(data["errors"]) <= {"reset", "closed"}
    assert sum(data["errors"].values()) == 4  # every connection, once
    assert data["requests_ok"] > 0
    assert load.stdout == [PHASE_MEASURE, PHASE_END]


def test_stalled_server_times_out_and_the_run_still_ends(
    start_server: ServerFactory, load_process: LoadFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "http")
    out = tmp_path / "stalled.json"
    load = load_process(*load_args(server, out, "--protocol", "http", "--connections", "3",
                                   "--duration", "1", "--warmup", "0.2",
                                   "--timeout", "1"))  # fmt: skip
    load.wait_for_line(PHASE_MEASURE)
    time.sleep(0.2)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        assert load.wait(timeout_s=30) == 1
    finally:
        os.kill(server.pid, signal.SIGCONT)
    data = json.loads(out.read_text())
    assert data["errors"] == {"timeout": 3}


def test_paused_server_shows_in_corrected_latency_only(
    start_server: ServerFactory, load_process: LoadFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "paused.json"
    load = load_process(*load_args(server, out, "--connections", "4", "--rate", "1000",
                                   "--duration", "3", "--warmup", "0.2"))  # fmt: skip
    load.wait_for_line(PHASE_MEASURE)
    time.sleep(0.5)
    os.kill(server.pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(server.pid, signal.SIGCONT)
    assert load.wait(timeout_s=30) == 0
    data = json.loads(out.read_text())
    corrected = data["latency_us"]["p99"]
    uncorrected = data["latency_us_uncorrected"]["p99"]
    # A third of the window's requests were due during the 1 s pause: wrk2-style
    # correction charges each with its wait; from the actual send, only the 4 requests in
    # flight at the pause saw it.
    assert corrected >= 500_000, data["latency_us"]
    assert uncorrected < corrected, (data["latency_us"], data["latency_us_uncorrected"])
    assert data["latency_us"]["max"] >= 900_000


def test_a_killed_worker_is_counted_and_the_others_still_report(
    start_server: ServerFactory, load_process: LoadFactory, tmp_path: Path
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "lost.json"
    load = load_process(*load_args(server, out, "--connections", "4", "--processes", "2",
                                   "--duration", "1.5", "--warmup", "0.2"))  # fmt: skip
    load.wait_for_line(PHASE_MEASURE)
    workers = [p for p in psutil.Process(load.proc.pid).children() if "spawn_main" in
               " ".join(p.cmdline())]  # fmt: skip
    assert len(workers) == 2
    workers[0].kill()
    assert load.wait(timeout_s=30) == 1
    data = json.loads(out.read_text())
    assert data["errors"] == {"worker_lost": 1}
    assert len(data["client_cpu"]) == 1
    assert data["requests_ok"] > 0
    assert len(data["worker_failures"]) == 1
    assert "exited without a report" in data["worker_failures"][0]


@pytest.mark.parametrize("target", ["parent", "process group"])
def test_ctrl_c_keeps_the_partial_result(
    start_server: ServerFactory, load_process: LoadFactory, tmp_path: Path, target: str
) -> None:
    server = start_server("epoll-lt", "echo")
    out = tmp_path / "interrupted.json"
    load = load_process(*load_args(server, out, "--connections", "4", "--processes", "2",
                                   "--duration", "30", "--warmup", "0.2"))  # fmt: skip
    load.wait_for_line(PHASE_MEASURE)
    time.sleep(0.5)
    if target == "parent":
        load.proc.send_signal(signal.SIGINT)
    else:  # what a terminal's Ctrl-C does: the workers get it too, and must not die of it
        os.killpg(load.proc.pid, signal.SIGINT)
    assert load.wait(timeout_s=20) == 130
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    assert data["requests_ok"] > 0
    assert 0 < data["duration_s"] < 30
    assert len(data["client_cpu"]) == 2
    assert data["errors"] == {}  # both workers reported
    assert load.stdout == [PHASE_MEASURE, PHASE_END]


# -- bad input and preconditions -----------------------------------------------------------


def closed_port() -> int:
    """A port where nothing listens (bound, never listening, so nobody else takes it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    closed_port.keep = sock  # type: ignore[attr-defined]
    return port


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "--port"),
        (["--port", "70000"], "--port"),
        (["--port", "PORT", "--connections", "0"], "--connections"),
        (["--port", "PORT", "--size", "4"], "--size"),
        (["--port", "PORT", "--rate", "-5"], "--rate"),
        (["--port", "PORT", "--cpus", "1-x"], "CPU list"),
        (["--port", "PORT", "--protocol", "gopher"], "--protocol"),
        (["--port", "PORT"], "connection refused"),
        (["--port", "PORT", "--host", "no-such-host.invalid"], "cannot resolve"),
        (["--port", "PORT", "--connections", "50000", "--processes", "1"], "RLIMIT_NOFILE"),
        (
            [
                "--port",
                "PORT",
                "--idle",
                "40000",
                "--processes",
                "4",
                "--source-addresses",
                "127.0.0.2",
            ],
            "ip_local_port_range",
        ),
        (["--port", "PORT", "--json", "TMP/a-file/result.json"], "--json"),
        (["--port", "PORT", "--cpus", "CPU", "--server-cpus", "CPU"], "--force"),
        (["--port", "PORT", "--header", "no colon"], "--header"),
        (["--port", "PORT", "--method", "HEAD"], "--method HEAD"),
        (["--port", "PORT", "--path", "no-slash"], "--path"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    port = str(closed_port())
    (tmp_path / "a-file").write_text("")
    cpu = str(min(os.sched_getaffinity(0)))
    argv = [a.replace("PORT", port).replace("TMP", str(tmp_path)).replace("CPU", cpu)
            for a in args]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "load", *argv],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("muxlab load: error:")
    assert needle in lines[0]
    assert proc.stdout == ""


# -- result files are whole or absent ------------------------------------------------------

WRITER = """
import sys
from muxlab.atomic import write_json_atomic
path = sys.argv[1]
big = {"histogram": "x" * 4_000_000}
write_json_atomic(path, {"n": 1, **big})
print("written", flush=True)
n = 1
while True:
    n += 1
    write_json_atomic(path, {"n": n, **big})
"""


def test_result_file_is_never_partial_even_when_the_writer_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    # Kill times spread over many write cycles (one 4 MB write takes some milliseconds),
    # each after the writer's first whole file: the file always exists when it is read.
    for delay_s in (0.0, 0.01, 0.03, 0.05, 0.09, 0.13, 0.17, 0.23):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == "written\n"
            time.sleep(delay_s)
        finally:
            writer.kill()
            writer.wait()
            if writer.stdout is not None:
                writer.stdout.close()
        data = json.loads(path.read_text())  # fails on a partial file
        assert data["n"] >= 1
        assert len(data["histogram"]) == 4_000_000


def test_a_failed_start_leaves_an_existing_result_untouched(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"old": true}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "load", "--port", str(closed_port()),
         "--json", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_workers_missing_the_start_deadline_are_errors(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No allowance to start: no worker can be ready in time, and none may run late."""
    server = start_server("epoll-lt", "echo")
    monkeypatch.setattr("loadgen.runner.SPAWN_ALLOWANCE_S", 0.0)
    result = run_load(LoadConfig(port=server.port, connections=2, processes=2,
                                 duration_s=0.3, warmup_s=0.0, timeout_s=0.001))  # fmt: skip
    assert result.errors == {"worker_not_ready": 2}
    assert result.requests_ok == 0
    assert result.exit_status == 1
    assert all("start deadline" in f for f in result.worker_failures)
