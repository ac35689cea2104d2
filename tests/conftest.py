"""Fixtures shared by the contract suites: backends, running servers, client sockets."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator

import pytest

from servers import registry
from servers.process import ServerProcess


def require_available(name: str, reason: str | None) -> None:
    """Skip a test of something this machine cannot run, with the reason; in CI
    (``CI=true``), where everything must run, fail instead."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} must run in CI but is not available: {reason}")
    pytest.skip(f"{name}: {reason}")


def require_backend(name: str) -> str:
    require_available(name, registry.get(name).check())
    return name


# The fixtures' parameters come from the implementation registry: a backend added there
# is in every contract suite without a line here.
def served_names() -> tuple[str, ...]:
    """Every implementation ``muxlab serve --backend`` takes, readiness or completion."""
    return registry.names("readiness backend", "completion loop")


def readiness_names() -> tuple[str, ...]:
    """The backends behind the readiness interface (register, modify, unregister, wait)."""
    return registry.names("readiness backend")


def python_peer_names() -> tuple[str, ...]:
    return registry.names("python peer")


@pytest.fixture(params=served_names())
def backend(request: pytest.FixtureRequest) -> str:
    """Every implementation ``muxlab serve --backend`` takes, readiness or completion."""
    return require_backend(request.param)


@pytest.fixture(params=readiness_names())
def readiness_backend(request: pytest.FixtureRequest) -> str:
    """The backends behind the readiness interface (register, modify, unregister, wait)."""
    return require_backend(request.param)


def _python_peer_param(name: str) -> object:
    reason = registry.get(name).check()
    return pytest.param(name, marks=[pytest.mark.skip(reason=reason)] if reason else [], id=name)


@pytest.fixture(params=[_python_peer_param(name) for name in python_peer_names()])
def python_peer(request: pytest.FixtureRequest) -> str:
    """Every Python peer (servers/peers.py); one whose loop is not installed is skipped."""
    name: str = request.param
    return name


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start ``muxlab serve`` children; every one is stopped and reaped at teardown."""
    started: list[ServerProcess] = []

    def start(backend: str, protocol: str = "echo", **kwargs: object) -> ServerProcess:
        server = ServerProcess(backend, protocol, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[tuple[str, int]], socket.socket]]:
    """Blocking client sockets with a timeout, closed at teardown."""
    opened: list[socket.socket] = []

    def make(address: tuple[str, int], timeout_s: float = 10.0) -> socket.socket:
        sock = socket.create_connection(address, timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        opened.append(sock)
        return sock

    yield make
    for sock in opened:
        sock.close()


def require_tool(name: str) -> str:
    """The tool's path; skip when missing, unless CI said tools are required."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("MUXLAB_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required here (MUXLAB_REQUIRE_TOOLS is set) but missing")
        pytest.skip(f"{name} is not installed (Debian package {name})")
    return path
