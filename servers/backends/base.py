"""The one interface every readiness mechanism implements.

Event bits are the kernel's own: ``EPOLLIN == POLLIN == 1``, ``EPOLLOUT == POLLOUT == 4``,
``EPOLLERR == POLLERR == 8``, ``EPOLLHUP == POLLHUP == 16`` (see ``poll(2)`` and
``epoll_ctl(2)``). Using them directly lets poll and epoll hand their result lists to the
server untranslated, so no backend pays for a conversion the others do not.

The interface is deliberately as small as CPython's ``selectors``: register, modify,
unregister, wait. What the server does with the events (accept, read, write, close) is
shared code in :mod:`servers.loop`; a backend only says how readiness is registered and
waited for, whether it is edge-triggered, and how many descriptors it can watch.
"""

from __future__ import annotations

import select
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

READ: int = select.POLLIN
WRITE: int = select.POLLOUT
# Reported whether or not they were asked for (poll(2), epoll_ctl(2)): a reset or a peer
# that closed both directions. The server treats them as "read now to learn what happened".
ERROR: int = select.POLLERR | select.POLLHUP

# glibc's FD_SETSIZE: select(2) takes bitmaps of this many bits, and CPython refuses any
# descriptor at or above it ("filedescriptor out of range in select()").
FD_SETSIZE: int = 1024

Event = tuple[int, int]
"""``(fd, events)`` as returned by :meth:`Backend.wait`."""


class SyscallCounts(Protocol):
    """Where a backend counts the system calls the loop cannot see: ``epoll_ctl(2)`` for
    epoll, ``io_uring_enter(2)`` and its traffic for io_uring
    (:class:`servers.counters.Counters` is one)."""

    ctl_calls: int
    uring_enters: int
    uring_sqes: int
    uring_cqes: int


@dataclass(slots=True)
class Tally:
    """The counts of a backend used without a server to count into (tests, demos)."""

    ctl_calls: int = 0
    uring_enters: int = 0
    uring_sqes: int = 0
    uring_cqes: int = 0


class DescriptorCeilingError(ValueError):
    """The descriptor is at or above what this mechanism can watch."""


class Backend(ABC):
    """A readiness mechanism: the part of an event loop that talks to the kernel."""

    name: ClassVar[str]
    edge_triggered: ClassVar[bool] = False
    fd_ceiling: ClassVar[int | None] = None
    """The first descriptor number this backend cannot watch; ``None`` means no ceiling."""
    short_read_drain: ClassVar[bool] = False
    """Edge-triggered and able to report a half-close with each event (``EPOLLRDHUP``): it
    can run ``--et-drain short-read`` (servers/loop.py)."""

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine, or ``None`` when it can."""
        return None

    def check_fd(self, fd: int) -> None:
        if self.fd_ceiling is not None and fd >= self.fd_ceiling:
            raise DescriptorCeilingError(
                f"descriptor {fd} is at or above {self.name}'s ceiling of {self.fd_ceiling}"
            )

    @abstractmethod
    def register(self, fd: int, events: int) -> None:
        """Start watching ``fd`` for ``events`` (a mask of READ and WRITE)."""

    @abstractmethod
    def modify(self, fd: int, events: int) -> None:
        """Change what ``fd`` is watched for; ``0`` keeps it registered but silent."""

    @abstractmethod
    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``. Must be called before the descriptor is closed."""

    @abstractmethod
    def wait(self, timeout_s: float | None) -> list[Event]:
        """Block until a descriptor is ready or ``timeout_s`` passes (``None``: forever)."""

    def close(self) -> None:  # noqa: B027 (select and poll hold no kernel object)
        """Release the kernel object, if the mechanism has one."""

    def watch_read_hangup(self) -> None:  # noqa: B027 (only where short_read_drain)
        """Ask the kernel to flag a peer's half-close (``EPOLLRDHUP``) in every event, so
        ``--et-drain short-read`` can tell "drained" from "drained up to an EOF". Called
        before the first :meth:`register`, on a backend whose ``short_read_drain`` is set."""

    def count_into(self, counts: SyscallCounts) -> None:  # noqa: B027 (most count nothing)
        """Count system calls the loop cannot see into ``counts``: epoll's ``epoll_ctl``
        per interest change, io_uring's shared ``io_uring_enter``. select and poll make no
        call to change interest (it lives in user space until the next wait)."""


class CompletionMechanism:
    """A mechanism that is not readiness: the kernel does the reads and writes and
    reports completions (io_uring's proactor model). It has no register/wait for the
    shared loop to drive, so it brings its own loop; the registry lists it with the
    backends because ``muxlab serve``, the harness and the tests select it the same way.
    """

    name: ClassVar[str]
    edge_triggered: ClassVar[bool] = False
    fd_ceiling: ClassVar[int | None] = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None
