"""``muxlab serve`` as a user meets it: ready line, signals, and one-line errors."""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import sys

import pytest

from muxlab.cli import main as muxlab_main
from servers.contract import parse_counters_line, parse_ready_line
from servers.loop import Server, ServerFailedError
from tests.conftest import ServerFactory

SERVE = [sys.executable, "-m", "muxlab", "serve"]


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ready_line_then_clean_exit_on_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*SERVE, "--backend", "poll", "--protocol", "http", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().rstrip("\n")
        ready = parse_ready_line(first)
        assert ready is not None, first
        assert (ready.host, ready.backend, ready.protocol) == ("127.0.0.1", "poll", "http")
        assert ready.port > 0
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    final = parse_counters_line(out.splitlines()[0])
    assert final is not None and final["connections_open"] == 0, out
    assert "Traceback" not in err


def test_counters_can_be_read_repeatedly_from_a_running_server(
    start_server: ServerFactory,
) -> None:
    server = start_server("epoll-lt", "echo")
    first = server.counters()
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
    second = server.counters()
    assert second["bytes_out"] - first["bytes_out"] == 4
    assert second["connections_accepted"] - first["connections_accepted"] == 1
    assert second["cpu_user_s"] >= first["cpu_user_s"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "kqueue"], "invalid choice: 'kqueue'"),
        (["--port", "70000"], "--port must be 0..65535"),
        (["--host", "no-such-host.invalid"], "cannot resolve host"),
        (["--cpu", "999"], "cannot pin to CPU 999"),
        (["--low-water", "10", "--high-water", "5"], "--low-water"),
        (["--max-connections", "0"], "--max-connections must be positive"),
        (["--max-output-bytes", "0"], "--max-output-bytes and --max-headers must be positive"),
        (["--header-timeout", "-1"], "--header-timeout, --idle-timeout and --et-read-budget"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run_serve(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve("--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"muxlab serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_server_lifts_its_soft_descriptor_limit_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc = subprocess.Popen(
        [*SERVE, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert parse_ready_line(proc.stdout.readline()) is not None
        assert resource.prlimit(proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_a_failed_listener_or_backend_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """How the loop's ServerFailedError reaches the user (the loop side is proved in
    tests/test_server_isolation.py): the counters line, then one line, exit 1."""

    def fail(self: Server) -> None:
        self._close_all()
        raise ServerFailedError("the listening socket failed: EINVAL (Invalid argument)")

    monkeypatch.setattr(Server, "run", fail)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's handlers
    status = muxlab_main(["serve", "--port", "0"])
    out, err = capsys.readouterr()
    assert status == 1
    assert err.splitlines() == [
        "muxlab serve: error: the listening socket failed: EINVAL (Invalid argument)"
    ]
    assert parse_ready_line(out.splitlines()[0]) is not None
    assert parse_counters_line(out.splitlines()[1]) is not None
