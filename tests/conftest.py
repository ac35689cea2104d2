"""Fixtures shared by the contract suites: backends, running servers, client sockets."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator

import pytest

from servers.backends import BACKEND_NAMES, BACKENDS
from servers.process import ServerProcess


def _backend_param(name: str) -> object:
    reason = BACKENDS[name].unavailable_reason()  # type: ignore[index]
    marks = [pytest.mark.skip(reason=reason)] if reason else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_backend_param(name) for name in BACKEND_NAMES])
def backend(request: pytest.FixtureRequest) -> str:
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
