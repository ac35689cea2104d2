"""``epoll(7)``: interest is registered once, in the kernel; a wait returns only ready ones.

Some facts about epoll:

- ``epoll_ctl(2)`` adds a descriptor to an interest list kept in the kernel (a red-black
  tree) and hooks a callback into that file's wait queue. Registration costs a system call
  per change, not per wait.
- When the file becomes ready, the callback puts it on a *ready list*. ``epoll_wait(2)``
  copies out at most ``maxevents`` entries from that list: its cost grows with the number
  of *ready* descriptors, not the number watched. 10,000 idle connections cost memory
  (about 160 bytes of kernel memory each), not time.
- Level-triggered (the default): after reporting a descriptor, ``epoll_wait`` re-checks it
  and puts it back on the ready list if it is still ready, so it is reported again on the
  next wait until the program drains it. Same contract as poll, different cost.
- Edge-triggered (``EPOLLET``): a descriptor is put on the ready list only when the
  callback fires, that is, when new data arrives or buffer space is freed. It is reported
  once per change. A program that reads 1 KiB of a 2 KiB message and waits again hangs
  forever (the example in ``man 7 epoll``). So an ET program must use non-blocking
  descriptors and read, write and accept until ``EAGAIN``.
- ``EPOLL_CTL_MOD`` re-checks readiness, so re-enabling ``EPOLLIN`` on a socket that
  already holds data reports it at once, in either mode. The server relies on this when it
  resumes reading after backpressure.

What that costs us: ET saves the re-check and the repeated reports, and pays one extra
``recv``/``accept`` per event, the one that returns ``EAGAIN``. The LT-vs-ET experiment
counts both; ``--et-drain short-read`` (servers/loop.py) saves the ``recv`` and ``send``
ones, and asks for ``EPOLLRDHUP`` to do it safely.

Limits: only ``RLIMIT_NOFILE`` and ``/proc/sys/fs/epoll/max_user_watches``.

Man pages: ``epoll(7)``, ``epoll_create(2)``, ``epoll_ctl(2)``, ``epoll_wait(2)``.
"""

from __future__ import annotations

import select

from servers.backends.base import Backend, Event, SyscallCounts, Tally

# A wait returns at most this many events; more ready descriptors are simply reported by
# the next wait (the ready list is not lost), so this bounds the result list, not fairness.
MAX_EVENTS = 1024


class EpollBackend(Backend):
    """Level-triggered epoll; :class:`EdgeTriggeredEpollBackend` differs by one flag."""

    name = "epoll-lt"
    _mode_flags = 0

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return None if hasattr(select, "epoll") else "select.epoll needs Linux"

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._counts: SyscallCounts = Tally()

    def count_into(self, counts: SyscallCounts) -> None:
        self._counts = counts

    # Each of the three is one epoll_ctl(2) (ADD, MOD, DEL), counted before the call:
    # a call the kernel refused was made all the same (and strace counts it).
    def register(self, fd: int, events: int) -> None:
        self._counts.ctl_calls += 1
        self._epoll.register(fd, events | self._mode_flags)

    def modify(self, fd: int, events: int) -> None:
        self._counts.ctl_calls += 1
        self._epoll.modify(fd, events | self._mode_flags)

    def unregister(self, fd: int) -> None:
        self._counts.ctl_calls += 1
        self._epoll.unregister(fd)

    def wait(self, timeout_s: float | None) -> list[Event]:
        # select.epoll.poll takes None for "block" (epoll_wait's timeout -1) itself.
        return self._epoll.poll(timeout_s, MAX_EVENTS)

    def close(self) -> None:
        self._epoll.close()


class EdgeTriggeredEpollBackend(EpollBackend):
    name = "epoll-et"
    edge_triggered = True
    _mode_flags = select.EPOLLET if hasattr(select, "EPOLLET") else 0

    short_read_drain = True

    def watch_read_hangup(self) -> None:
        # EPOLLRDHUP (2.6.17) is reported with EPOLLIN when the peer shut down writing;
        # without it a short read cannot tell "nothing more" from "nothing more but EOF".
        self._mode_flags = type(self)._mode_flags | select.EPOLLRDHUP
