"""Source addresses: the load generator spreads its connections over several local addresses
so that no address pair runs short of ephemeral ports (issue 12, C20K/C50K client side)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen import LoadConfig, ramp, run_load, worker
from loadgen.connection import connections_per_source, plan_sources, start_connect
from loadgen.messages import WorkerSpec
from loadgen.preflight import Target, check_port_range
from muxlab.errors import SetupError

DEFAULT_RANGE = (32768, 60999)


class PeerCountingEcho(socketserver.ThreadingTCPServer):
    """An echo server that records every accepted connection's peer address
    (``getpeername(2)``): the server-side proof of where connections came from."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.peers: Counter[str] = Counter()
        self.lock = threading.Lock()


class EchoHandler(socketserver.BaseRequestHandler):
    server: PeerCountingEcho

    def handle(self) -> None:
        sock: socket.socket = self.request
        with self.server.lock:
            self.server.peers[sock.getpeername()[0]] += 1
        while data := sock.recv(65536):
            sock.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[PeerCountingEcho]:
    server = PeerCountingEcho()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_connections_come_from_both_source_addresses(echo_server: PeerCountingEcho) -> None:
    result = run_load(
        LoadConfig(
            port=echo_server.server_address[1],
            connections=4,
            idle=16,
            processes=2,
            duration_s=0.5,
            warmup_s=0.1,
            source_addresses=("127.0.0.2", "127.0.0.3"),
        )
    )
    assert result.errors == {}
    assert result.requests_ok > 0
    assert (result.connections.active, result.connections.idle_open_at_end) == (4, 16)
    # Two workers of 10 connections each, round-robin over two addresses: 10 from each,
    # and one probe from each before the run.
    assert echo_server.peers == Counter({"127.0.0.2": 11, "127.0.0.3": 11})


def test_automatic_sources_only_past_a_quarter_of_the_port_range() -> None:
    share = connections_per_source(DEFAULT_RANGE)
    assert share == (60999 - 32768 + 1) // 4
    loopback = (socket.AF_INET, ("127.0.0.1", 8080))
    assert plan_sources(*loopback, share, DEFAULT_RANGE) == ()
    assert plan_sources(*loopback, share + 1, DEFAULT_RANGE) == ("127.0.0.2", "127.0.0.3")
    assert plan_sources(*loopback, 19_936, DEFAULT_RANGE) == (
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
    )
    fifty_k = plan_sources(*loopback, 50_000, DEFAULT_RANGE)
    assert len(fifty_k) == 8 and fifty_k[-1] == "127.0.0.9"
    assert 50_000 / len(fifty_k) <= share


def test_no_automatic_sources_off_loopback_or_without_a_port_range() -> None:
    assert plan_sources(socket.AF_INET, ("198.18.0.1", 80), 50_000, DEFAULT_RANGE) == ()
    assert plan_sources(socket.AF_INET6, ("::1", 80, 0, 0), 50_000, DEFAULT_RANGE) == ()
    assert plan_sources(socket.AF_INET, ("127.0.0.1", 80), 50_000, None) == ()


def test_port_check_counts_every_source_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("loadgen.preflight.local_port_range", lambda: (40000, 40009))
    config = LoadConfig(port=80, connections=5, idle=10)
    one = Target(socket.AF_INET, ("127.0.0.1", 80), b"")
    with pytest.raises(SetupError, match="15 connections to one address from 1 source"):
        check_port_range(config, one)
    two = Target(socket.AF_INET, ("127.0.0.1", 80), b"", ("127.0.0.2", "127.0.0.3"))
    check_port_range(config, two)  # 20 ports for 15 connections


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ("127.0.0.2,nonsense", "bad address 'nonsense'"),
        ("::1", "--source-addresses ::1: not IPv4, the server's family"),
        # TEST-NET-1 (RFC 5737) is on no interface here: bind(2) fails, nothing is sent.
        ("192.0.2.1", "from 192.0.2.1: Cannot assign requested address"),
    ],
)
def test_bad_source_addresses_are_one_line_errors(
    echo_server: PeerCountingEcho, addresses: str, message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "load", "--port", str(echo_server.server_address[1]),
         "--duration", "0.2", "--source-addresses", addresses],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr
    assert echo_server.peers == Counter()


NETNS_SCRIPT = """
import json, subprocess, sys, threading
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write("40000 40039")
from loadgen import LoadConfig, run_load
from tests.test_loadgen_sources import PeerCountingEcho
server = PeerCountingEcho()
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
result = run_load(LoadConfig(port=server.server_address[1], connections=4, idle=56,
                             processes=1, duration_s=0.3, warmup_s=0.1))
server.shutdown()
print(json.dumps({"errors": result.errors, "peers": server.peers,
                  "held": result.connections.active + result.connections.idle_open_at_end}))
"""


def test_automatic_sources_hold_more_connections_than_one_address_has_ports() -> None:
    """In a private network namespace with 40 ephemeral ports, 60 connections: one address
    could not hold them (preflight would refuse); automatic spreading puts 10 on each of
    six loopback addresses (a quarter of 40), and each address gets its probe too."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a private network namespace")
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", NETNS_SCRIPT],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert (report["errors"], report["held"]) == ({}, 60)
    assert report["peers"] == {f"127.0.0.{i}": 11 for i in range(2, 8)}


def test_a_slow_ramp_does_not_time_out_connections_the_kernel_completed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every connect(2) takes 50 ms (as past half the port range) and all are due at once:
    the batch takes 1 s, five times the 0.2 s timeout. Each deadline counts from its own
    connect and completions are collected before deadlines are checked, so none of the
    connections, all completed by the kernel at once on loopback, is a timeout."""
    connections = 20

    def slow_connect(*args: Any) -> socket.socket:
        time.sleep(0.05)
        return start_connect(*args)

    monkeypatch.setattr(ramp, "start_connect", slow_connect)
    with socket.create_server(("127.0.0.1", 0), backlog=connections) as listener:
        spec = WorkerSpec(
            index=0, family=socket.AF_INET, sockaddr=listener.getsockname(),
            protocol="echo", request=b"", first_cid=0, active=0,
            idle=connections, all_active=0, size_bytes=64, pipeline=1, rate_rps=None,
            connect_rate_cps=1e6, timeout_s=0.2, cpu=None, fds_needed=0, progress=False,
        )  # fmt: skip
        ours, theirs = multiprocessing.Pipe()
        w = worker.Worker(spec, ours)
        try:
            report = ramp.ramp(w)
        finally:
            for sock in w.idle_socks:
                sock.close()
            ours.close()
            theirs.close()
    assert (report.idle, report.connect_errors) == (connections, 0)
    assert w.errors == Counter()
