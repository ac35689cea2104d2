"""The interface between the worker and a protocol client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from loadgen.connection import Conn

if TYPE_CHECKING:
    from loadgen.worker import Worker, WorkerSpec

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
