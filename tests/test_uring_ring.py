"""The io_uring binding (servers/uring): ring setup, round trips, probe, poll, buffers."""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from servers.backends import READ
from servers.backends.uring_backend import UringPollBackend
from servers.uring import abi
from servers.uring.buffers import BufferRing, bytes_address
from servers.uring.ring import Ring, unavailable_reason
from tests.conftest import require_available

F_MORE = abi.IORING_CQE_F_MORE


@pytest.fixture(autouse=True)
def _io_uring_here() -> None:
    require_available("io_uring", unavailable_reason())


@pytest.fixture
def ring() -> Iterator[Ring]:
    instance = Ring(sq_entries=8, cq_entries=16)
    yield instance
    instance.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_setup_maps_rings_of_the_sizes_asked_and_probes_the_kernel(ring: Ring) -> None:
    assert (ring.sq_entries, ring.cq_entries) == (8, 16)
    caps = ring.capabilities
    assert caps.kernel >= (5, 15)
    assert set(abi.OPCODE_NAMES) <= caps.ops  # every opcode the servers use
    assert abi.IORING_OP_NOP in caps.ops
    assert max(caps.ops) < 256


def test_nop_round_trip_returns_its_user_data_and_counts_one_enter(ring: Ring) -> None:
    ring.prep(abi.IORING_OP_NOP, -1, 0xDEADBEEF12345678)
    assert ring.enter(1, None) == 1
    assert ring.completions() == [(0xDEADBEEF12345678, 0, 0)]
    assert ring.completions() == []  # the head moved: nothing is read twice
    counts = ring.counts
    assert (counts.uring_enters, counts.uring_sqes, counts.uring_cqes) == (1, 1, 1)


def test_many_batches_wrap_both_rings_in_order(ring: Ring) -> None:
    seen: list[int] = []
    for batch in range(40):  # 40 x 7 entries go around an 8-slot SQ and 16-slot CQ
        for i in range(7):
            ring.prep(abi.IORING_OP_NOP, -1, batch * 7 + i)
        ring.enter(7, None)
        seen += [user_data for user_data, _, _ in ring.completions()]
    assert seen == list(range(280))


def test_a_full_submission_queue_is_handed_over_before_it_overflows(ring: Ring) -> None:
    for i in range(12):  # more than the 8 SQ slots, without an explicit enter
        ring.prep(abi.IORING_OP_NOP, -1, i)
    assert ring.counts.uring_enters == 1  # the 9th prep flushed the first 8
    ring.enter(4, None)
    assert sorted(user_data for user_data, _, _ in ring.completions()) == list(range(12))


def test_a_wait_with_a_timeout_returns_empty_when_nothing_completes(ring: Ring) -> None:
    assert ring.enter(1, 0.05) == 0
    assert ring.completions() == []


def test_poll_add_multishot_reports_each_change_and_remove_cancels_it(
    ring: Ring, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    ring.prep(abi.IORING_OP_POLL_ADD, a.fileno(), 7, length=abi.IORING_POLL_ADD_MULTI,
              op_flags=select.POLLIN)  # fmt: skip
    assert ring.enter(1, 0.05) == 1
    assert ring.completions() == []  # nothing to read yet
    b.send(b"x")
    ring.enter(1, 1.0)
    [(user_data, res, flags)] = ring.completions()
    assert (user_data, res & select.POLLIN, bool(flags & F_MORE)) == (7, select.POLLIN, True)
    ring.enter(1, 0.05)
    assert ring.completions() == []  # the unread byte is not reported again: edge-like
    ring.prep(abi.IORING_OP_POLL_REMOVE, -1, 8, addr=7)
    ring.enter(2, 1.0)
    assert sorted(ring.completions()) == [(7, -errno.ECANCELED, 0), (8, 0, 0)]


def test_poll_backend_drops_a_stale_cqe_when_the_descriptor_number_is_reused() -> None:
    """The generation in user_data: a CQE posted for an fd that was then closed and its
    number reused must not be reported for the new socket."""
    mux = UringPollBackend()
    try:
        old, old_peer = socket.socketpair()
        old_fd = old.fileno()
        mux.register(old_fd, READ)
        old_peer.send(b"ready")
        mux._ring.enter(1, 1.0)  # the kernel posts the CQE; nobody reaps it yet
        mux.unregister(old_fd)
        old.close()
        old_peer.close()
        new, new_peer = socket.socketpair()
        assert old_fd in (new.fileno(), new_peer.fileno())  # the number is reused
        new_fd = old_fd
        mux.register(new_fd, READ)
        assert mux.wait(0.1) == []  # nothing to read on the new socket
        (new_peer if new.fileno() == new_fd else new).send(b"now")
        assert mux.wait(1.0) == [(new_fd, READ)]
        new.close()
        new_peer.close()
    finally:
        mux.close()


def test_buffer_ring_feeds_a_multishot_receive(
    ring: Ring, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    buffers = BufferRing(ring, group=3, count=4, size=8)
    try:
        ring.prep(abi.IORING_OP_RECV, a.fileno(), 9, sqe_flags=abi.IOSQE_BUFFER_SELECT,
                  ioprio=abi.IORING_RECV_MULTISHOT, buf_group=3)  # fmt: skip
        received = b""
        for message in (b"hello", b"multishot", b"!"):
            b.send(message)
            want = len(received) + len(message)
            while len(received) < want:
                ring.enter(1, 1.0)
                for user_data, res, flags in ring.completions():
                    assert user_data == 9 and res > 0 and flags & F_MORE
                    assert flags & abi.IORING_CQE_F_BUFFER
                    received += buffers.take(flags >> abi.IORING_CQE_BUFFER_SHIFT, res)
        # 15 bytes through 8-byte buffers: the four buffers were given back and reused.
        assert received == b"hellomultishot!"
    finally:
        buffers.close()


def test_bytes_address_points_at_the_payload() -> None:
    data = b"payload for the kernel"
    assert ctypes.string_at(bytes_address(data), len(data)) == data


def test_unavailable_on_a_kernel_older_than_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUXLAB_URING_KERNEL", "5.10")
    unavailable_reason.cache_clear()
    try:
        assert unavailable_reason() == (
            "Linux 5.10 is older than 5.15, the oldest this binding supports"
        )
    finally:
        monkeypatch.delenv("MUXLAB_URING_KERNEL")
        unavailable_reason.cache_clear()


@pytest.mark.parametrize("backend", ["io_uring", "io_uring-poll"])
def test_serve_exits_2_with_the_reason_when_io_uring_is_unavailable(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "muxlab", "serve", "--backend", backend, "--port", "0"],
        capture_output=True, text=True, timeout=20,
        env={**os.environ, "MUXLAB_URING_KERNEL": "5.10"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"muxlab serve: error: backend {backend!r} is not available here: "
        "Linux 5.10 is older than 5.15, the oldest this binding supports"
    ]


def test_an_old_kernel_gets_no_new_features(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUXLAB_URING_KERNEL", "5.15")
    instance = Ring(sq_entries=4, cq_entries=8)
    try:
        caps = instance.capabilities
        assert not (caps.multishot_recv or caps.buffer_ring)
        assert not caps.setup_flags & (
            abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_DEFER_TASKRUN
        )
    finally:
        instance.close()


def test_a_missing_io_uring_skips_here_but_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="io_uring: disabled here"):
        require_available("io_uring", "disabled here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        require_available("io_uring", "disabled here")
    require_available("io_uring", None)  # available: neither
