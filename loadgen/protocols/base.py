"""The interface between the worker and a protocol client, and what every client shares.

A protocol client owns its request bytes, its reply framing and verification, and its
closed-loop hot loop. The worker (``loadgen.worker``) owns the sockets: it opens, reopens
and closes connections, and sends (:meth:`~loadgen.worker.Worker.send_or_queue`, the one
send path). Adding a protocol is one module here with a :class:`ProtocolClient` subclass
and one line in :data:`loadgen.protocols.CLIENTS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from loadgen.config import LoadConfig
from loadgen.connection import Conn

if TYPE_CHECKING:
    from loadgen.messages import WorkerSpec
    from loadgen.worker import Worker

# One recv(2) asks for at most 64 KiB: every reply of a connection's pipeline fits at the
# usual message sizes, and CPython allocates the buffer, then shrinks it to what arrived,
# so asking for much more (say 1 MiB) would cost an mmap/munmap per call for nothing.
RECV_BYTES = 65536

# fail(conn, kind): count ``kind`` and close the connection for good.
FailCallback = Callable[[Conn, str], None]
# reopen(conn, payload): close gracefully, connect again, send ``payload`` first; False
# when the new connection failed at once (then counted and closed, as by fail).
ReopenCallback = Callable[[Conn, bytes], bool]


class ProtocolClient(ABC):
    """Request bytes, reply framing and verification of one protocol."""

    def __init__(self, spec: WorkerSpec, fail: FailCallback, reopen: ReopenCallback) -> None:
        self.spec = spec
        self.fail = fail
        self.reopen = reopen

    @classmethod
    def fixed_request(cls, config: LoadConfig, authority: str) -> bytes:
        """The request every connection sends, built once by the parent from the config
        (``authority`` is ``host:port``); b"" for a protocol whose requests all differ."""
        return b""

    @abstractmethod
    def payload(self, c: Conn, n: int) -> bytes:
        """The bytes of ``n`` new requests on ``c`` (recorded as owed where it matters)."""

    @abstractmethod
    def absorb(self, c: Conn, data: bytes) -> int:
        """Replies completed by ``data`` (b"" is EOF) when it is not exactly ``c.expect``;
        -1 when the connection was failed or reopened and ``data`` settled nothing."""

    @abstractmethod
    def rearm(self, c: Conn) -> None:
        """Set ``c.expect`` after requests were added to ``c.sent``."""

    @abstractmethod
    def closed_loop(self, w: Worker) -> None:
        """The closed-loop traffic phase: refill each connection as its replies arrive."""
