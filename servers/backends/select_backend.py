"""``select(2)``: three bitmaps in, three bitmaps out, every call.

What the kernel does per call: it copies the read and write ``fd_set`` bitmaps in, walks
every bit up to ``nfds`` calling each file's ``poll`` method (and, when nothing is ready,
adds the caller to each file's wait queue, then removes it again on wake-up), and copies
the bitmaps back. Nothing is remembered between calls.

What that costs as descriptors grow: O(watched descriptors) per call, in the kernel and,
here, in CPython too, which rebuilds the bitmaps from our sets and then scans them to
build the result lists. An idle connection costs as much as a busy one.

Limits: descriptors must be below ``FD_SETSIZE`` (1024 with glibc); CPython raises
``ValueError: filedescriptor out of range in select()`` for anything higher, and a C
program that ignores the limit corrupts its stack. No edge-triggered mode.

Man page: ``select(2)``; ``select_tut(2)`` for the idioms.
"""

from __future__ import annotations

import select

from servers.backends.base import FD_SETSIZE, READ, WRITE, Backend, Event


class SelectBackend(Backend):
    name = "select"
    fd_ceiling = FD_SETSIZE

    def __init__(self) -> None:
        self._readers: set[int] = set()
        self._writers: set[int] = set()

    def register(self, fd: int, events: int) -> None:
        self.check_fd(fd)
        self.modify(fd, events)

    def modify(self, fd: int, events: int) -> None:
        if events & READ:
            self._readers.add(fd)
        else:
            self._readers.discard(fd)
        if events & WRITE:
            self._writers.add(fd)
        else:
            self._writers.discard(fd)

    def unregister(self, fd: int) -> None:
        self._readers.discard(fd)
        self._writers.discard(fd)

    def wait(self, timeout_s: float | None) -> list[Event]:
        readable, writable, _ = select.select(self._readers, self._writers, (), timeout_s)
        if not writable:
            return [(fd, READ) for fd in readable]
        ready = dict.fromkeys(readable, READ)
        for fd in writable:
            ready[fd] = ready.get(fd, 0) | WRITE
        return list(ready.items())
