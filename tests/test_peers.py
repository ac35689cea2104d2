"""Reference peers: same process interface as muxlab serve, same bytes on the wire."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servers import peers, registry
from servers.contract import parse_ready_line
from servers.peers import NginxServer
from servers.process import ServerProcess, ServerProcessError, terminate
from servers.protocols import HTTP_BODY, HTTP_OK
from tests.clients import echo_chunks, recv_exactly, split_http_responses
from tests.conftest import require_tool

REQUIRED_COUNTERS = {"cpu_user_s", "cpu_system_s", "bytes_in", "bytes_out", "connections_accepted"}
GET = b"GET / HTTP/1.1\r\nHost: muxlab\r\n\r\n"

Connect = Callable[[tuple[str, int]], socket.socket]


@pytest.fixture
def peer(python_peer: str) -> str:
    return python_peer


def peer_process(impl: str, protocol: str) -> ServerProcess:
    """Not started yet: ``with`` starts it (and would start a second one if it were)."""
    return ServerProcess(impl, protocol, command=("-m", "servers.peers"), impl_option="--impl")


def test_echo_peer_returns_every_byte_and_counts_it(peer: str, connect: Connect) -> None:
    server = peer_process(peer, "echo").start()
    try:
        sock = connect(server.address)
        chunks = [bytes([i % 251]) * 4096 for i in range(64)]
        assert echo_chunks(sock, chunks) == b"".join(chunks)
        counters = server.counters()
        assert set(counters) >= REQUIRED_COUNTERS
        assert counters["bytes_in"] == counters["bytes_out"] == 64 * 4096
        assert counters["connections_accepted"] == 1
        assert "wait_calls" not in counters  # not measured, so not reported
    finally:
        final = server.stop()
    assert server.returncode == 0
    assert final is not None and final["bytes_out"] == 64 * 4096


def test_http_peer_sends_muxlab_bytes_exactly(peer: str, connect: Connect) -> None:
    with peer_process(peer, "http") as server:
        sock = connect(server.address)
        sock.sendall(GET + GET)  # pipelined: replies in order
        assert recv_exactly(sock, 2 * len(HTTP_OK)) == HTTP_OK * 2
        assert server.counters()["bytes_out"] == 2 * len(HTTP_OK)


def test_peer_ready_line_names_the_implementation(peer: str) -> None:
    """The first line a peer prints is muxlab serve's ready line, with its own name and
    protocol in it, and the port it really listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servers.peers", "--impl", peer, "--protocol", "http"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        ready = parse_ready_line(line)
        assert ready is not None, line
        assert (ready.host, ready.backend, ready.protocol) == ("127.0.0.1", peer, "http")
        with socket.create_connection(("127.0.0.1", ready.port), timeout=10):
            pass  # the port it names is the port it listens on
    finally:
        terminate(proc, signal.SIGTERM, 10.0)
    assert proc.returncode == 0


def test_peer_exits_zero_on_sigint() -> None:
    server = peer_process("asyncio-protocol", "echo").start()
    try:
        os.kill(server.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        while server.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.returncode == 0
    finally:
        server.stop()


def test_nginx_serves_the_same_body(connect: Connect) -> None:
    require_tool("nginx")
    with NginxServer(cpu=0) as server:
        sock = connect(server.address)
        sock.sendall(GET * 3)
        data = b""
        while data.count(HTTP_BODY) < 3:
            chunk = sock.recv(65536)
            assert chunk, "nginx closed the connection"
            data += chunk
        responses = split_http_responses(data)
        assert responses == [(200, HTTP_BODY)] * 3
        assert b"Content-Type: text/plain\r\n" in data
        counters = server.counters()
        assert {"cpu_user_s", "cpu_system_s"} <= set(counters)
        assert server.pid > 0
    assert server.returncode is not None  # reaped


def test_missing_optional_peers_have_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "uvloop_missing", lambda: True)
    monkeypatch.setattr(peers, "nginx_path", lambda: None)
    reason = registry.get("uvloop-streams").unavailable_reason("echo")
    assert "uvloop is not installed" in (reason or "")
    assert "nginx is not installed" in (registry.get("nginx").unavailable_reason("http") or "")
    assert registry.get("asyncio-streams").unavailable_reason("http") is None
    assert registry.get("nginx").unavailable_reason("echo") == "nginx is compared on HTTP only"


def test_nginx_errors_go_to_its_log_file_and_into_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_tool("nginx")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # nginx is told to listen on a port already in use: it must fail, and say so.
        monkeypatch.setattr(peers, "free_port", lambda host: taken.getsockname()[1])
        log = tmp_path / "run" / "servers" / "nginx.log"
        server = NginxServer(log_path=log)
        with pytest.raises(ServerProcessError, match="Address already in use"):
            server.start()
    assert "bind()" in log.read_text() and "Address already in use" in log.read_text()
    assert server.returncode is not None  # the failed master was reaped


def test_nginx_without_a_run_directory_logs_into_its_temporary_directory() -> None:
    require_tool("nginx")
    with NginxServer() as server:
        assert server.error_log is not None and server.error_log.exists()
        temporary = server.error_log.parent
    assert not temporary.exists()  # removed with the server


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands nginx workers to another user")
def test_nginx_started_as_root_runs_its_worker_unprivileged(connect: Connect) -> None:
    require_tool("nginx")
    with NginxServer() as server:
        sock = connect(server.address)
        sock.sendall(GET)  # the worker can still serve: it reads what the master set up
        data = b""
        while HTTP_BODY not in data:
            chunk = sock.recv(65536)
            assert chunk, "nginx closed the connection"
            data += chunk
        assert split_http_responses(data) == [(200, HTTP_BODY)]
        status = Path(f"/proc/{server.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    nobody = pwd.getpwnam(peers.NGINX_USER[0]).pw_uid
    assert uid_line.split()[1:] == [str(nobody)] * 4  # real, effective, saved, filesystem
