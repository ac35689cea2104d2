"""Checks made before any worker starts, so a run that cannot work fails in one line.

Each check names the limit it hit and how to raise it: the address must resolve and
accept a connection, every worker's share of connections must fit the descriptor limit
(``getrlimit(2)``, RLIMIT_NOFILE), and all connections from one source address to one
server address need distinct local ports (``net.ipv4.ip_local_port_range``, ``ip(7)``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from resource import RLIM_INFINITY
from typing import Any

from loadgen.config import LoadConfig
from loadgen.protocols import CLIENTS
from muxlab.errors import SetupError
from muxlab.fdbudget import fd_limits, worker_descriptors

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass(frozen=True)
class Target:
    family: int
    sockaddr: tuple[Any, ...]
    request: bytes  # the protocol client's fixed request (ProtocolClient.fixed_request)


def resolve_target(config: LoadConfig) -> Target:
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise SetupError(f"cannot resolve host {config.host!r}: {exc.strerror}") from None
    host = f"[{config.host}]" if ":" in config.host else config.host
    request = CLIENTS[config.protocol].fixed_request(config, f"{host}:{config.port}")
    return Target(family, tuple(sockaddr), request)


def fds_per_worker(config: LoadConfig) -> int:
    assert config.processes is not None
    return worker_descriptors(-(-config.total_connections // config.processes))


def check_fd_limit(config: LoadConfig) -> None:
    needed = fds_per_worker(config)
    _, hard = fd_limits()
    if hard != RLIM_INFINITY and needed > hard:
        raise SetupError(
            f"{config.total_connections} connections over {config.processes} worker "
            f"process(es) need {needed} descriptors per process, above the hard limit "
            f"RLIMIT_NOFILE={hard}: raise it (ulimit -Hn as root, or nofile in "
            f"/etc/security/limits.conf) or add --processes"
        )


def local_port_range() -> tuple[int, int] | None:
    try:
        low, high = PORT_RANGE_FILE.read_text().split()
    except (OSError, ValueError):
        return None
    return int(low), int(high)


def check_port_range(config: LoadConfig) -> None:
    ports = local_port_range()
    if ports is None:
        return
    low, high = ports
    available = high - low + 1
    if config.total_connections > available:
        raise SetupError(
            f"{config.total_connections} connections to one address need as many local "
            f"ports, but net.ipv4.ip_local_port_range {low}-{high} has {available}: widen "
            f"it (sysctl -w net.ipv4.ip_local_port_range='1024 65535') or use fewer "
            f"--connections/--idle"
        )


def probe(target: Target, config: LoadConfig) -> None:
    """One connection, opened and closed, to fail early when nothing listens there."""
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.settimeout(config.timeout_s)
    try:
        sock.connect(target.sockaddr)
    except ConnectionRefusedError:
        raise SetupError(
            f"connection refused by {config.host}:{config.port}: is a server listening "
            f"there? (start one with: muxlab serve --port {config.port})"
        ) from None
    except TimeoutError:
        raise SetupError(
            f"no answer from {config.host}:{config.port} within --timeout {config.timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise SetupError(f"cannot connect to {config.host}:{config.port}: {exc.strerror}") from None
    finally:
        sock.close()


def preflight(config: LoadConfig) -> Target:
    """Every check, cheapest first; the resolved target when all pass."""
    check_fd_limit(config)
    check_port_range(config)
    target = resolve_target(config)
    probe(target, config)
    return target
