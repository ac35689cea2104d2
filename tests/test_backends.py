"""The backend interface on socket pairs: registration, interest changes, LT/ET semantics."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from servers.backends import (
    BACKENDS,
    FD_SETSIZE,
    READ,
    READINESS_BACKENDS,
    WRITE,
    Backend,
    BackendUnavailableError,
    DescriptorCeilingError,
    brings_own_loop,
    create_backend,
)


@pytest.fixture
def backend(readiness_backend: str) -> str:
    """This module tests the readiness interface, which the completion loop lacks."""
    return readiness_backend


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def mux(backend: str) -> Iterator[Backend]:
    instance = create_backend(backend)  # type: ignore[arg-type]
    yield instance
    instance.close()


def ready(mux: Backend, timeout_s: float = 0.0) -> dict[int, int]:
    return dict(mux.wait(timeout_s))


def test_registry_names_match_classes() -> None:
    assert {name: cls.name for name, cls in BACKENDS.items()} == {n: n for n in BACKENDS}
    # Multishot POLL_ADD reports a change once, like EPOLLET (servers/backends/uring_backend.py).
    edge = [n for n, cls in BACKENDS.items() if cls.edge_triggered]
    assert edge == ["epoll-et", "io_uring-poll"]
    assert [n for n in BACKENDS if brings_own_loop(n)] == ["io_uring"]
    assert set(READINESS_BACKENDS) == set(BACKENDS) - {"io_uring"}
    assert BACKENDS["select"].fd_ceiling == FD_SETSIZE
    assert all(cls.fd_ceiling is None for n, cls in BACKENDS.items() if n != "select")


def test_read_readiness_and_unregister(
    mux: Backend, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    mux.register(a.fileno(), READ)
    assert ready(mux) == {}
    b.send(b"x")
    assert ready(mux, 1.0) == {a.fileno(): READ}
    mux.unregister(a.fileno())
    assert ready(mux) == {}


def test_modify_switches_between_read_and_write(
    mux: Backend, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = pair
    mux.register(a.fileno(), READ)
    assert ready(mux) == {}  # nothing to read yet
    mux.modify(a.fileno(), READ | WRITE)
    assert ready(mux, 1.0) == {a.fileno(): WRITE}  # an empty send buffer is writable
    mux.modify(a.fileno(), 0)
    assert ready(mux) == {}


def test_level_triggered_reports_again_edge_triggered_once(
    mux: Backend, pair: tuple[socket.socket, socket.socket]
) -> None:
    """``man 7 epoll``: 2 KiB written, 1 KiB read, then wait again."""
    a, b = pair
    mux.register(a.fileno(), READ)
    b.send(b"y" * 2048)
    assert ready(mux, 1.0) == {a.fileno(): READ}
    assert len(a.recv(1024)) == 1024
    again = ready(mux)
    if mux.edge_triggered:
        assert again == {}, "ET must not report the same data twice"
        b.send(b"z")  # new data is a new edge
        assert ready(mux, 1.0) == {a.fileno(): READ}
    else:
        assert again == {a.fileno(): READ}, "LT must report unread data again"


def test_select_refuses_descriptors_past_its_ceiling() -> None:
    mux = create_backend("select")
    with pytest.raises(DescriptorCeilingError, match="1024"):
        mux.register(FD_SETSIZE, READ)
    mux.register(FD_SETSIZE - 1, 0)  # the last legal descriptor number is accepted


def test_the_completion_loop_is_not_a_readiness_backend() -> None:
    with pytest.raises(BackendUnavailableError, match="completion loop"):
        create_backend("io_uring")
