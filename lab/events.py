"""Event masks as names: ``IN|RDHUP`` instead of ``8193``.

The bit values are the kernel's and shared by ``poll(2)`` and ``epoll_ctl(2)``
(``EPOLLIN == POLLIN``, ``EPOLLOUT == POLLOUT``, ...), so one table decodes what every
backend returns.
"""

from __future__ import annotations

import select

_FLAGS: tuple[tuple[str, int], ...] = (
    ("IN", select.EPOLLIN),
    ("PRI", select.EPOLLPRI),
    ("OUT", select.EPOLLOUT),
    ("ERR", select.EPOLLERR),
    ("HUP", select.EPOLLHUP),
    ("RDHUP", select.EPOLLRDHUP),
    ("EXCLUSIVE", select.EPOLLEXCLUSIVE),
    ("ONESHOT", select.EPOLLONESHOT),
    ("ET", select.EPOLLET),
)


def event_names(mask: int) -> str:
    """``"IN|HUP"`` for ``EPOLLIN | EPOLLHUP``; unknown bits are kept as hex, 0 is ``"0"``."""
    names = []
    rest = mask
    for name, bit in _FLAGS:
        if mask & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names) or "0"
