"""Protocol clients: one module per protocol, owning its request bytes, reply framing and
verification, and the closed-loop hot loop that uses them.

The worker (``loadgen.worker``) opens, reopens and closes connections, runs the phases and
the open loop; a client is picked from :data:`CLIENTS` by the protocol's name.
"""

from __future__ import annotations

from loadgen.config import LoadProtocol
from loadgen.protocols.base import ProtocolClient
from loadgen.protocols.echo import EchoClient
from loadgen.protocols.http import HttpClient

CLIENTS: dict[LoadProtocol, type[ProtocolClient]] = {"echo": EchoClient, "http": HttpClient}

__all__ = ["CLIENTS", "ProtocolClient"]
