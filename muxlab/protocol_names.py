"""The names of the wire protocols: the one list the server and the load generator share.

A protocol is spoken by both ends: a server session (:mod:`servers.protocols`) and a
client module (:mod:`loadgen.protocols`). Neither package imports the other, so the names
both select by live here, once; each end keeps its own registry from name to code.
"""

from __future__ import annotations

from typing import Literal, get_args

ProtocolName = Literal["echo", "http"]
PROTOCOL_NAMES: tuple[ProtocolName, ...] = get_args(ProtocolName)
