"""What a server child says on stdout, and how a parent reads it: one owner, both sides.

Every server the lab measures (``muxlab serve``, the Python peers) speaks the same
process interface, so the sweep, the tests and the notebooks start and read them the
same way (:class:`servers.process.ServerProcess`):

- The **ready line**, the first line on stdout, printed once the listener is bound:
  ``muxlab: listening on HOST:PORT backend=NAME protocol=NAME``. A parent waits for it
  before it connects, and learns the port the kernel picked for ``--port 0``.
- The **counters line**, printed on SIGUSR1 and once more at shutdown:
  ``muxlab: counters {json}``, a snapshot of :class:`servers.counters.Counters` (plus the
  process's CPU time and peak RSS), keys sorted so two snapshots diff line by line.

Both writers and both parsers are here and nowhere else; a test round-trips each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

READY_PREFIX = "muxlab: listening on "
COUNTERS_PREFIX = "muxlab: counters "
_READY_RE = re.compile(
    re.escape(READY_PREFIX)
    + r"(?P<host>\S+):(?P<port>\d+) backend=(?P<backend>\S+) protocol=(?P<protocol>\S+)$"
)


@dataclass(frozen=True)
class ReadyLine:
    """Where a server listens and what it runs. ``backend`` is the implementation's name
    (a readiness backend, io_uring, or a peer such as ``uvloop-protocol``)."""

    host: str
    port: int
    backend: str
    protocol: str

    def format(self) -> str:
        return (
            f"{READY_PREFIX}{self.host}:{self.port} backend={self.backend} protocol={self.protocol}"
        )


def parse_ready_line(line: str) -> ReadyLine | None:
    """The ready line's fields, or ``None`` for any other line (trailing newline allowed)."""
    match = _READY_RE.match(line.rstrip("\n"))
    if match is None:
        return None
    return ReadyLine(match["host"], int(match["port"]), match["backend"], match["protocol"])


def format_counters_line(snapshot: dict[str, Any]) -> str:
    return COUNTERS_PREFIX + json.dumps(snapshot, sort_keys=True)


def parse_counters_line(line: str) -> dict[str, Any] | None:
    """The snapshot in a ``muxlab: counters`` line, or ``None`` for any other line."""
    if not line.startswith(COUNTERS_PREFIX):
        return None
    parsed: dict[str, Any] = json.loads(line[len(COUNTERS_PREFIX) :])
    return parsed
