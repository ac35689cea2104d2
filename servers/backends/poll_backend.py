"""``poll(2)``: an array of ``struct pollfd`` in, the same array with ``revents`` out.

What the kernel does per call: it copies the whole array in (8 bytes per descriptor),
calls every file's ``poll`` method, queues the caller on every file's wait queue when
nothing is ready, and copies the array back. As with select, nothing is remembered
between calls; CPython keeps the array and rebuilds it only after a change of interest,
then scans all of it for non-zero ``revents``.

What that costs as descriptors grow: O(watched descriptors) per call, busy or idle. With
10 active and 3,000 idle connections, every wake-up still touches 3,010 descriptors.

Limits: no ``FD_SETSIZE`` ceiling, only ``RLIMIT_NOFILE``; no edge-triggered mode.
``POLLERR`` and ``POLLHUP`` are reported even when not requested.

Man page: ``poll(2)``.
"""

from __future__ import annotations

import select

from servers.backends.base import Backend, Event


class PollBackend(Backend):
    name = "poll"

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def wait(self, timeout_s: float | None) -> list[Event]:
        # poll(2) counts in milliseconds; round up so a short timeout never becomes a spin.
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000 + 0.999))
        return self._poll.poll(timeout_ms)
