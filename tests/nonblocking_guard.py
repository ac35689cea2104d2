"""A guard that records every blocking-only socket call made on a non-blocking socket.

``sendall`` on a non-blocking socket raises ``BlockingIOError`` after sending an unknown
part of the buffer, and a ``makefile`` stream requires a blocking socket (``socket``
module docs); demos and reference solutions are code students copy, so none may do
either. The guard wraps the methods of ``socket.socket`` (the Python class every socket
the standard library returns is an instance of) for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

BLOCKING_ONLY = ("sendall", "makefile")


@contextlib.contextmanager
def blocking_calls_on_nonblocking_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Yield a list that fills with one line per offending call: ``method at file:line``."""
    offences: list[str] = []
    for name in BLOCKING_ONLY:
        original = getattr(socket.socket, name)

        def guarded(self: socket.socket, *args: Any, _o: Any = original, _n: str = name,
                    **kwargs: Any) -> Any:  # fmt: skip
            if not self.getblocking():
                caller = traceback.extract_stack(limit=2)[0]
                offences.append(f"{_n} at {caller.filename}:{caller.lineno}")
            return _o(self, *args, **kwargs)

        monkeypatch.setattr(socket.socket, name, guarded)
    yield offences
