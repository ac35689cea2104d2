"""Checks made before any worker starts, so a run that cannot work fails in one line.

Each check names the limit it hit and how to raise it: the address must resolve and
accept a connection, every worker's share of connections must fit the descriptor limit
(``getrlimit(2)``, RLIMIT_NOFILE), and all connections from one source address to one
server address need distinct local ports (``net.ipv4.ip_local_port_range``, ``ip(7)``).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from resource import RLIM_INFINITY
from typing import Any

from loadgen.config import LoadConfig
from loadgen.connection import bind_source, plan_sources
from loadgen.protocols import CLIENTS
from muxlab.errors import SetupError
from muxlab.fdbudget import fd_limits, worker_descriptors

PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass(frozen=True)
class Target:
    family: int
    sockaddr: tuple[Any, ...]
    request: bytes  # the protocol client's fixed request (ProtocolClient.fixed_request)
    # Where the connections come from (loadgen.connection); (): the kernel's choice.
    source_addresses: tuple[str, ...] = ()


def resolve_target(config: LoadConfig) -> Target:
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM
        )[0]
    except socket.gaierror as exc:
        raise SetupError(f"cannot resolve host {config.host!r}: {exc.strerror}") from None
    host = f"[{config.host}]" if ":" in config.host else config.host
    request = CLIENTS[config.protocol].fixed_request(config, f"{host}:{config.port}")
    if config.source_addresses is None:
        sources = plan_sources(
            family, tuple(sockaddr), config.total_connections, local_port_range()
        )
    else:
        sources = config.source_addresses
        check_source_family(sources, family)
    return Target(family, tuple(sockaddr), request, sources)


def check_source_family(sources: tuple[str, ...], family: int) -> None:
    wanted = 6 if family == socket.AF_INET6 else 4
    wrong = [a for a in sources if ipaddress.ip_address(a).version != wanted]
    if wrong:
        raise SetupError(
            f"--source-addresses {', '.join(wrong)}: not IPv{wanted}, the server's family"
        )


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


def check_port_range(config: LoadConfig, target: Target) -> None:
    """Each source address (one when the kernel chooses) has the whole port range."""
    ports = local_port_range()
    if ports is None:
        return
    low, high = ports
    sources = max(1, len(target.source_addresses))
    available = (high - low + 1) * sources
    if config.total_connections > available:
        raise SetupError(
            f"{config.total_connections} connections to one address from {sources} source "
            f"address(es) need as many local ports, but net.ipv4.ip_local_port_range "
            f"{low}-{high} gives {available}: widen it (sysctl -w "
            f"net.ipv4.ip_local_port_range='1024 65535'), add --source-addresses or use "
            f"fewer --connections/--idle"
        )


def probe(target: Target, config: LoadConfig) -> None:
    """One connection from each source address (or from the kernel's choice), opened and
    closed, to fail early when nothing listens there or a source address is not local."""
    for source in target.source_addresses or (None,):
        probe_from(source, target, config)


def probe_from(source: str | None, target: Target, config: LoadConfig) -> None:
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    sock.settimeout(config.timeout_s)
    try:
        if source is not None:
            bind_source(sock, source)
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
        origin = f" from {source}" if source is not None else ""
        raise SetupError(
            f"cannot connect to {config.host}:{config.port}{origin}: {exc.strerror}"
        ) from None
    finally:
        sock.close()


def preflight(config: LoadConfig) -> Target:
    """Every check, cheapest first; the resolved target when all pass."""
    check_fd_limit(config)
    target = resolve_target(config)
    check_port_range(config, target)
    probe(target, config)
    return target
