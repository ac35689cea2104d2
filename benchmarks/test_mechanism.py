"""Cost of one wait-and-dispatch pass, per mechanism, as registered descriptors grow.

In the manner of libevent's ``test/bench.c``: N descriptors registered for reading, K of
them made ready before each round, and the time of one pass (one wait call with a zero
timeout plus the dispatch of what it returned) is what is measured. The N descriptors are
the two ends of N/2 socketpairs, both ends registered, so a byte written to one end makes
exactly its partner ready: N registered descriptors cost N descriptors, so N = 10,000
needs a soft ``RLIMIT_NOFILE`` above 10,000 plus the descriptors already open; under a
lower limit that case is skipped with the limit it found (raise it with ``ulimit -n``).

What to expect: select and poll hand all N descriptors to the kernel on every call, so a
pass costs O(N) even with one ready; epoll keeps the interest list in the kernel and a
pass costs O(K). select stops at FD_SETSIZE (1024 descriptor numbers): those cases are
skipped with the reason.

Run: ``pytest --benchmark-only benchmarks/test_mechanism.py --benchmark-json=bench.json``,
then ``muxlab plot bench.json`` draws cost against N, one line per backend.
"""

from __future__ import annotations

import os
import resource
import socket
from collections.abc import Callable, Iterator

import pytest

from servers import registry
from servers.backends import (
    BACKENDS,
    FD_SETSIZE,
    READ,
    READINESS_BACKEND_NAMES,
    Backend,
    create_backend,
)

N_FDS = (10, 100, 500, 1000, 5000, 10000)
K_READY = (1, 10)
ROUNDS = 500
WARMUP_ROUNDS = 10
CAPTION = (
    "One pass = one wait call with timeout 0 plus reading the byte from each ready "
    "descriptor; N descriptors registered for reading, K made ready before each round. "
    "select/poll scan all N per call; epoll reports only the ready ones. "
    "Median of rounds, bar = IQR."
)


class ReadyRing:
    """N registered socketpair ends; :meth:`arm` makes K of them readable."""

    def __init__(self, backend: Backend, n_fds: int, k_ready: int) -> None:
        self.backend = backend
        self.pairs = [socket.socketpair() for _ in range(n_fds // 2)]
        self.partner: dict[int, socket.socket] = {}
        fds: list[int] = []
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
            self.partner[a.fileno()] = b
            self.partner[b.fileno()] = a
            fds += [a.fileno(), b.fileno()]
        # Spread the ready ones over the whole range, so a scan cannot stop early.
        self.active = [fds[i * len(fds) // k_ready] for i in range(k_ready)]
        for fd in fds:
            backend.register(fd, READ)
        self.dispatched: list[int] = []

    def arm(self) -> None:
        for fd in self.active:
            self.partner[fd].send(b"!")

    def one_pass(self) -> int:
        # The timed target: what an event loop does per iteration, and nothing else.
        events = self.backend.wait(0)
        read = os.read
        for fd, _ in events:
            read(fd, 64)
        self.dispatched.append(len(events))
        return len(events)

    def close(self) -> None:
        self.backend.close()
        for a, b in self.pairs:
            a.close()
            b.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def ring_factory() -> Iterator[Callable[[str, int, int], ReadyRing]]:
    rings: list[ReadyRing] = []

    def make(backend_name: str, n_fds: int, k_ready: int) -> ReadyRing:
        cls = BACKENDS[backend_name]  # type: ignore[index]
        reason = cls.unavailable_reason()
        if reason:
            pytest.skip(reason)
        ceiling = cls.fd_ceiling
        if ceiling is not None and open_fds() + n_fds >= ceiling:
            pytest.skip(
                f"{backend_name}: {n_fds} descriptors plus the {open_fds()} already open "
                f"reach its descriptor ceiling of {registry.get(backend_name).ceiling_label()}"
            )
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit != resource.RLIM_INFINITY and open_fds() + n_fds >= soft_limit:
            pytest.skip(
                f"{n_fds} descriptors plus the {open_fds()} already open pass this process's "
                f"RLIMIT_NOFILE of {soft_limit} (raise it with ulimit -n)"
            )
        ring = ReadyRing(create_backend(backend_name), n_fds, k_ready)  # type: ignore[arg-type]
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()


@pytest.mark.parametrize("k_ready", K_READY, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("n_fds", N_FDS, ids=lambda n: f"N{n}")
@pytest.mark.parametrize("backend_name", READINESS_BACKEND_NAMES)
def test_wait_and_dispatch_pass(
    benchmark: pytest.FixtureRequest,
    ring_factory: Callable[[str, int, int], ReadyRing],
    backend_name: str,
    n_fds: int,
    k_ready: int,
) -> None:
    ring = ring_factory(backend_name, n_fds, k_ready)
    benchmark.group = f"mechanism: one wait-and-dispatch pass, K={k_ready} ready"  # type: ignore[attr-defined]
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        backend=backend_name,
        n_fds=n_fds,
        k_ready=k_ready,
        edge_triggered=BACKENDS[backend_name].edge_triggered,  # type: ignore[index]
        select_ceiling=FD_SETSIZE,
        x="n_fds",
        x_label="registered descriptors N (log)",
        y_label="time per pass (us, log)",
        caption=CAPTION,
    )
    benchmark.pedantic(  # type: ignore[attr-defined]
        ring.one_pass, setup=ring.arm, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1
    )
    # Every round found exactly the K descriptors armed for it, on every mechanism.
    assert ring.dispatched == [k_ready] * (ROUNDS + WARMUP_ROUNDS)
