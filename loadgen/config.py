"""What a load run is asked to do: one frozen :class:`LoadConfig`, checked before anything starts.

The CLI builds it from options, notebooks build it directly; either way :func:`validate`
turns a bad combination into :class:`~muxlab.errors.UsageError` (exit 2) before a single
process or socket exists, and :func:`resolve` fills in the defaults that depend on this
machine (how many worker processes), so the result file records what actually ran.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from muxlab.errors import UsageError
from muxlab.protocol_names import PROTOCOL_NAMES, ProtocolName

# The server's names (muxlab/protocol_names.py), under the load generator's own words.
LoadProtocol = ProtocolName
LOAD_PROTOCOLS: tuple[LoadProtocol, ...] = PROTOCOL_NAMES

# Every echo message starts with the connection id (u32) and sequence number (u64), so it
# cannot be shorter than this.
ECHO_HEADER_BYTES = 12
MAX_SIZE_BYTES = 16 << 20
# Latencies are recorded up to one hour (see recording.HIGHEST_NS).
MAX_TIMEOUT_S = 3600.0
# 2000 connections/s is well below what the slowest backend accepts (a Python accept loop
# takes tens of thousands per second), so the listen backlog never overflows and no SYN
# waits out a 1 s retransmission (tcp(7), tcp_syn_retries); 10000 idle connections still
# open in 5 s.
DEFAULT_CONNECT_RATE_CPS = 2000.0
# RFC 9110 5.6.2: a method and a field name are tokens; a field value and the path may
# not hold CR, LF or NUL (RFC 9110 5.5), and the path no whitespace (RFC 9112 3.2).
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class LoadConfig:
    port: int
    host: str = "127.0.0.1"
    protocol: LoadProtocol = "echo"
    connections: int = 10
    idle: int = 0
    # None: one per CPU we may run on, minus the server's CPUs (or one per --cpus entry).
    processes: int | None = None
    cpus: tuple[int, ...] = ()
    server_cpus: tuple[int, ...] = ()
    duration_s: float = 10.0
    warmup_s: float = 1.0
    size_bytes: int = 64
    pipeline: int = 1
    # None: closed loop; a number: open loop at this total rate, requests per second.
    rate_rps: float | None = None
    connect_rate_cps: float = DEFAULT_CONNECT_RATE_CPS
    timeout_s: float = 5.0
    # HTTP only: the request sent on every connection, as wrk's -m/--header/URL path.
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    # A client CPU that is also a server CPU is refused unless this is set (--force).
    allow_shared_cpus: bool = False
    # Local addresses the connections are spread over, round-robin (--source-addresses);
    # None: automatic, several loopback addresses only where one would run short of ports
    # (loadgen.connection.plan_sources).
    source_addresses: tuple[str, ...] | None = None

    @property
    def open_loop(self) -> bool:
        return self.rate_rps is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadConfig:
        """The inverse of ``dataclasses.asdict``: the ``config`` object of a result file."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown LoadConfig field(s) {unknown}")
        values = dict(data)
        for name in ("cpus", "server_cpus"):
            if name in values:
                values[name] = tuple(values[name])
        if "headers" in values:
            values["headers"] = tuple((str(n), str(v)) for n, v in values["headers"])
        return cls(**values)

    @property
    def total_connections(self) -> int:
        return self.connections + self.idle


def load_protocol(name: str) -> LoadProtocol:
    """``name`` as a protocol the load generator speaks; :class:`UsageError` if none."""
    for protocol in LOAD_PROTOCOLS:
        if protocol == name:
            return protocol
    raise UsageError(f"the load generator speaks {', '.join(LOAD_PROTOCOLS)}, not {name!r}")


def parse_header(text: str) -> tuple[str, str]:
    """``"Name: value"`` -> ``("Name", "value")`` (wrk's ``--header`` syntax)."""
    name, colon, value = text.partition(":")
    if not colon or not TOKEN.fullmatch(name) or not FIELD_VALUE.fullmatch(value):
        raise UsageError(f"bad --header {text!r}: expected 'Name: value'")
    return name, value.strip()


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """``"1"``, ``"0,2"``, ``"1,2-3"`` -> sorted CPU numbers (the ``taskset -c`` syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise UsageError(f"bad CPU list {text!r}: expected e.g. '1' or '0,2-3'") from None
        if lo < 0 or hi < lo:
            raise UsageError(f"bad CPU range {part.strip()!r} in {text!r}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def parse_address_list(text: str) -> tuple[str, ...]:
    """``"127.0.0.2,127.0.0.3"`` -> the addresses, each checked to be an IP address."""
    addresses = tuple(part.strip() for part in text.split(","))
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(
                f"bad address {address!r} in {text!r}: expected e.g. '127.0.0.2,127.0.0.3'"
            ) from None
    return addresses


def default_processes(cpus: tuple[int, ...], server_cpus: tuple[int, ...]) -> int:
    if cpus:
        return len(cpus)
    usable = os.sched_getaffinity(0) - set(server_cpus)
    return max(1, len(usable))


def validate(config: LoadConfig) -> None:
    """Raise :class:`UsageError` for options that cannot work, whatever the machine."""
    checks: list[tuple[bool, str]] = [
        (1 <= config.port <= 65535, f"--port must be 1..65535, not {config.port}"),
        (config.protocol in LOAD_PROTOCOLS, f"--protocol must be one of {LOAD_PROTOCOLS}"),
        (config.connections >= 1, f"--connections must be >= 1, not {config.connections}"),
        (config.idle >= 0, f"--idle must be >= 0, not {config.idle}"),
        (config.processes is None or config.processes >= 1,
         f"--processes must be >= 1, not {config.processes}"),
        (config.duration_s > 0, f"--duration must be > 0 s, not {config.duration_s}"),
        (config.warmup_s >= 0, f"--warmup must be >= 0 s, not {config.warmup_s}"),
        (ECHO_HEADER_BYTES <= config.size_bytes <= MAX_SIZE_BYTES,
         f"--size must be {ECHO_HEADER_BYTES}..{MAX_SIZE_BYTES} bytes (an echo message "
         f"carries a {ECHO_HEADER_BYTES}-byte header), not {config.size_bytes}"),
        (config.pipeline >= 1, f"--pipeline must be >= 1, not {config.pipeline}"),
        (config.rate_rps is None or config.rate_rps > 0,
         f"--rate must be > 0 requests/s, not {config.rate_rps}"),
        (config.connect_rate_cps > 0,
         f"--connect-rate must be > 0 connections/s, not {config.connect_rate_cps}"),
        (0 < config.timeout_s <= MAX_TIMEOUT_S,
         f"--timeout must be in (0, {MAX_TIMEOUT_S:g}] s, not {config.timeout_s}"),
        (TOKEN.fullmatch(config.method) is not None,
         f"--method must be an HTTP method token, not {config.method!r}"),
        (config.method.upper() != "HEAD",
         "--method HEAD is not supported: its replies announce a body they do not carry, "
         "which the reply parser (llhttp) cannot be told"),
        (REQUEST_TARGET.fullmatch(config.path) is not None and config.path[:1] in "/*",
         f"--path must start with '/' and hold no spaces, not {config.path!r}"),
        (config.source_addresses is None or len(config.source_addresses) >= 1,
         "--source-addresses must name at least one address"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    allowed = os.sched_getaffinity(0)
    bad = sorted(set(config.cpus) - allowed)
    if bad:
        raise UsageError(f"--cpus {bad} not in this process's CPU set {sorted(allowed)}")
    shared = sorted(set(config.cpus) & set(config.server_cpus))
    if shared and not config.allow_shared_cpus:
        raise UsageError(
            f"--cpus and --server-cpus share CPU(s) {shared}: the client would take CPU time "
            "from the server it measures; choose other CPUs, or --force"
        )


def resolve(config: LoadConfig) -> LoadConfig:
    """The validated config with machine-dependent defaults filled in."""
    validate(config)
    processes = config.processes or default_processes(config.cpus, config.server_cpus)
    # A worker with no connection at all would only cost a process start.
    processes = max(1, min(processes, config.total_connections))
    return dataclasses.replace(config, processes=processes)
