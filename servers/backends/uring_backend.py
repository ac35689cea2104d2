"""``io_uring(7)`` as a readiness mechanism: ``IORING_OP_POLL_ADD`` through the ring.

Some facts about poll requests on io_uring:

- A ``POLL_ADD`` SQE asks the kernel to watch one descriptor for a mask of ``poll(2)``
  events; its CQE carries the ready mask in ``res``. Submitting it hooks a callback into
  the file's wait queue, as ``epoll_ctl(EPOLL_CTL_ADD)`` does, and checks readiness once
  at once, so a descriptor that is already ready completes without waiting.
- Multishot (``IORING_POLL_ADD_MULTI``, 5.13) keeps the request armed: every wake-up of
  the file's wait queue that matches the mask posts one more CQE, flagged
  ``IORING_CQE_F_MORE``. It is *edge-like*: a CQE is posted when the wait queue is woken
  (new data, freed buffer space), not while data stays unread; a socket holding 1 KiB
  of an unread 2 KiB message is not reported again until more arrives, exactly the
  ``man 7 epoll`` ET pitfall. (Single-shot ``POLL_ADD`` is level-triggered but one-shot:
  it re-checks when armed, completes once, and must be re-armed after each event.) So
  this backend is ``edge_triggered`` and the shared loop drains every read, write and
  accept to ``EAGAIN``, as it does for ``epoll-et``.
- A multishot request can still end (a CQE without ``F_MORE``: an error, or a CQ that
  overflowed); the backend re-arms it then, or the descriptor would go deaf.
- Changing interest is ``POLL_REMOVE`` of the old request (matched by ``user_data``) and
  ``POLL_ADD`` of a new one; the new one checks readiness when armed, like
  ``EPOLL_CTL_MOD``, which the loop relies on when it resumes reading after
  backpressure. Neither is a system call: both are SQEs, handed over with the next wait.
- Stale CQEs: a CQE of a removed request may already sit in the CQ, and the descriptor
  number may have been closed and reused by then. Every request's ``user_data`` is its
  descriptor and a generation number (``gen << 32 | fd``), the generation is new for
  every arm, and a CQE whose generation is not the descriptor's current one is dropped.
- A removal can fail with ``EALREADY``: the multishot request was busy posting a CQE
  and stays armed. It is retried until it takes; until then the request holds a
  reference to the file, so a closed socket would never send its FIN.

What a wait costs: one ``io_uring_enter(2)`` that submits every queued change and sleeps
until a CQE is posted; reading the CQEs is a memory copy. Like epoll, the cost grows with
the number of *ready* descriptors, not the number watched: an idle connection is a
request parked on its wait queue (a few hundred bytes of kernel memory). Unlike epoll,
interest changes cost no system call at all.

Limits: ``RLIMIT_NOFILE``; the CQ holds 8,192 CQEs, and a fuller one overflows to a
kernel list (``IORING_FEAT_NODROP``, 5.5) and is reaped on the next wait; ``RLIMIT_MEMLOCK``
on kernels before 5.12, which charged the rings to it. The binding and its kernel
coverage: :mod:`servers.uring.ring`.

Man pages: ``io_uring(7)``, ``io_uring_enter(2)`` (``IORING_OP_POLL_ADD``,
``IORING_OP_POLL_REMOVE``), ``io_uring_prep_poll_multishot(3)``.
"""

from __future__ import annotations

import errno

from servers.backends.base import ERROR, Backend, CompletionMechanism, Event, SyscallCounts
from servers.uring import abi
from servers.uring.ring import Ring, unavailable_reason

_FD_MASK = 0xFFFFFFFF
_GEN_LIMIT = 1 << 31
_REMOVAL = 1 << 63


class UringPollBackend(Backend):
    """Readiness through the ring: multishot ``POLL_ADD`` per descriptor."""

    name = "io_uring-poll"
    edge_triggered = True

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return unavailable_reason()

    def __init__(self) -> None:
        self._ring = Ring()
        self._gen: dict[int, int] = {}  # fd -> generation of its armed request (0: none)
        self._mask: dict[int, int] = {}  # fd -> events asked for
        self._next_gen = 1

    def count_into(self, counts: SyscallCounts) -> None:
        self._ring.counts = counts

    def _arm(self, fd: int, events: int) -> None:
        gen = self._next_gen
        # Generations wrap after 2**31 arms; a CQE that stale is long reaped by then.
        self._next_gen = gen + 1 if gen + 1 < _GEN_LIMIT else 1
        self._ring.prep(abi.IORING_OP_POLL_ADD, fd, gen << 32 | fd,
                        length=abi.IORING_POLL_ADD_MULTI, op_flags=events | ERROR)  # fmt: skip
        self._gen[fd] = gen

    def _disarm(self, fd: int) -> None:
        gen = self._gen.get(fd, 0)
        if gen:
            self._remove(gen << 32 | fd)
            self._gen[fd] = 0

    def _remove(self, target: int) -> None:
        # addr: the user_data of the request to remove. The removal's own user_data is
        # the target's with _REMOVAL set, so its CQE says what to retry.
        self._ring.prep(abi.IORING_OP_POLL_REMOVE, -1, target | _REMOVAL, addr=target)

    def register(self, fd: int, events: int) -> None:
        if fd in self._mask:
            raise FileExistsError(errno.EEXIST, f"descriptor {fd} is already registered")
        self._mask[fd] = events
        self._gen[fd] = 0
        if events:
            self._arm(fd, events)

    def modify(self, fd: int, events: int) -> None:
        if fd not in self._mask:
            raise KeyError(fd)
        self._disarm(fd)
        self._mask[fd] = events
        if events:
            self._arm(fd, events)

    def unregister(self, fd: int) -> None:
        if fd not in self._mask:
            raise KeyError(fd)
        self._disarm(fd)
        del self._mask[fd]
        del self._gen[fd]

    def wait(self, timeout_s: float | None) -> list[Event]:
        ring = self._ring
        ring.enter(1, timeout_s)
        gens = self._gen
        ready: dict[int, int] = {}
        for user_data, res, flags in ring.completions():
            if user_data & _REMOVAL:
                if res == -errno.EALREADY:
                    # The request was completing a CQE when the removal came, and stays
                    # armed: remove it again, or it holds the file open forever.
                    self._remove(user_data & ~_REMOVAL)
                continue
            fd = user_data & _FD_MASK
            gen = user_data >> 32
            if gens.get(fd) != gen:
                continue  # from a request no longer armed: stale
            # A failed request (EBADF, ENOMEM, ...) reports the descriptor in error, so
            # the loop reads it and learns what happened.
            ev = ERROR if res < 0 else res & (self._mask[fd] | ERROR)
            ready[fd] = ready.get(fd, 0) | ev
            if not flags & abi.IORING_CQE_F_MORE:
                self._arm(fd, self._mask[fd])  # the multishot request ended: re-arm
        return [(fd, ev) for fd, ev in ready.items() if ev]

    def close(self) -> None:
        self._ring.close()


class UringCompletion(CompletionMechanism):
    """io_uring's completion mode: the kernel accepts, receives and sends, and the loop in
    :mod:`servers.uring_loop` handles the completions. Listed here so that it is chosen
    like any backend; it has no readiness interface."""

    name = "io_uring"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return unavailable_reason()
