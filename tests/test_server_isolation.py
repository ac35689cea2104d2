"""One connection's failure ends that connection only; the listener's or the backend's
failure stops the server with one reason. Run in-process, so a test can make a session,
a registration or a wait fail on purpose."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from servers.backends import READINESS_BACKENDS, Backend, Event, ReadinessBackendName
from servers.loop import Server, ServerConfig, ServerFailedError
from servers.protocols import MAX_HEADERS, Session
from tests.clients import recv_until_eof


@pytest.fixture
def backend(readiness_backend: str) -> str:
    """This module tests the readiness interface, which the completion loop lacks."""
    return readiness_backend


class ExplodingSession:
    """Echo, except that a message containing ``boom`` raises, as a parser bug would."""

    wants_close = False
    attention = False
    partial_seq = 0

    def data_received(self, data: bytes) -> bytes:
        if b"boom" in data:
            int(b"9" * 5000)  # CPython's int-string limit: a ValueError
        return data

    def timed_out(self) -> bytes:
        return b""


def exploding_session(max_headers: int = MAX_HEADERS) -> Session:
    return ExplodingSession()


class InProcessServer:
    """A :class:`Server` run in a thread; ``failure`` is what ``run`` raised, if anything."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:
            self.failure = exc

    def join(self) -> None:
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the server thread did not stop"

    def stop(self) -> None:
        self.server.request_stop()
        self.join()

    def counters(self) -> dict[str, Any]:
        """A snapshot taken by the loop between two batches, as SIGUSR1 does."""
        taken = threading.Event()
        box: list[dict[str, Any]] = []

        def keep(snapshot: dict[str, Any]) -> None:
            box.append(snapshot)
            taken.set()

        self.server._on_snapshot = keep
        self.server.request_snapshot()
        assert taken.wait(10), "no snapshot from the server thread"
        return box[0]


@pytest.fixture
def run_server() -> Iterator[Any]:
    started: list[InProcessServer] = []

    def run(server: Server) -> InProcessServer:
        handle = InProcessServer(server)
        started.append(handle)
        return handle

    yield run
    for handle in started:
        handle.stop()


def echo_once(address: tuple[str, int], payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_eof(sock)


def test_an_exception_in_the_protocol_closes_only_that_connection(
    backend: ReadinessBackendName, run_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(ServerConfig(backend=backend), session_factory=exploding_session)
    handle = run_server(server)
    bystander = socket.create_connection(server.address, timeout=10)
    bystander.sendall(b"before")
    assert bystander.recv(6) == b"before"
    with caplog.at_level(logging.WARNING, logger="muxlab.server"):
        for _ in range(3):
            with socket.create_connection(server.address, timeout=10) as victim:
                victim.sendall(b"boom")
                assert recv_until_eof(victim) == b""  # closed by the server
    bystander.sendall(b"after")
    assert bystander.recv(5) == b"after"
    assert echo_once(server.address, b"fresh") == b"fresh"
    counters = handle.counters()
    assert counters["errors"]["exception_ValueError"] == 3
    assert counters["connections_accepted"] == 5
    assert counters["connections_accepted"] == (
        counters["connections_closed"] + counters["connections_open"]
    )
    with_traceback = [r for r in caplog.records if r.exc_info is not None]
    assert len(with_traceback) == 1  # the traceback once per kind, then rate-limited
    assert handle.failure is None
    bystander.close()


def failing_backend(name: ReadinessBackendName, fail_register_errno: int = 0,
                    fail_wait_errno: int = 0) -> Backend:  # fmt: skip
    """The named backend, with the next non-listener register or every wait failing."""
    base: type[Backend] = READINESS_BACKENDS[name]

    class Failing(base):  # type: ignore[valid-type,misc]
        registrations = 0

        def register(self, fd: int, events: int) -> None:
            self.registrations += 1
            # Registration 1 is the listener, 2 the wake-up pair; 3 is the first client.
            if fail_register_errno and self.registrations == 3:
                raise OSError(fail_register_errno, "injected")
            super().register(fd, events)

        def wait(self, timeout_s: float | None) -> list[Event]:
            if fail_wait_errno:
                raise OSError(fail_wait_errno, "injected")
            events: list[Event] = super().wait(timeout_s)
            return events

    return Failing()


def test_a_failed_register_on_accept_closes_that_socket_and_goes_on(
    backend: ReadinessBackendName, run_server: Any
) -> None:
    config = ServerConfig(backend=backend)
    server = Server(config, backend=failing_backend(backend, fail_register_errno=errno.ENOSPC))
    handle = run_server(server)
    with socket.create_connection(server.address, timeout=10) as refused:
        assert recv_until_eof(refused) == b""  # the server closed it: no leaked socket
    assert echo_once(server.address, b"next one") == b"next one"
    counters = handle.counters()
    assert counters["errors"]["accept_ENOSPC"] == 1
    assert counters["connections_accepted"] == 1  # the refused one never became one
    assert counters["connections_open"] == 0
    assert handle.failure is None


def test_a_failed_wait_stops_the_server_with_one_reason(backend: ReadinessBackendName) -> None:
    config = ServerConfig(backend=backend)
    server = Server(config, backend=failing_backend(backend, fail_wait_errno=errno.ENOMEM))
    handle = InProcessServer(server)
    handle.join()
    assert isinstance(handle.failure, ServerFailedError)
    assert str(handle.failure) == f"{backend} wait failed: ENOMEM (injected)"


def test_a_broken_listener_stops_the_server_and_closes_every_connection(
    backend: ReadinessBackendName,
) -> None:
    server = Server(ServerConfig(backend=backend))
    handle = InProcessServer(server)
    client = socket.create_connection(server.address, timeout=10)
    client.sendall(b"x")
    assert client.recv(1) == b"x"
    # shutdown(2) on a listening socket makes every later accept(2) fail with EINVAL
    # and reports the socket ready (HUP): the listener itself is broken.
    server.listener.shutdown(socket.SHUT_RDWR)
    handle.join()
    assert isinstance(handle.failure, ServerFailedError)
    assert str(handle.failure) == "the listening socket failed: EINVAL (Invalid argument)"
    assert recv_until_eof(client) == b""
    client.close()
