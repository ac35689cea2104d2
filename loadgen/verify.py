"""What kind of wrong a wrong reply is: the error kinds every protocol client counts.

The protocol clients (:mod:`loadgen.protocols`) frame and verify replies; on a reply that
is not what was asked for they raise :class:`VerifyError` with one of these kinds, which
is the counter name in ``results["errors"]``.
"""

from __future__ import annotations

ECHO_CORRUPT = "echo_corrupt"
ECHO_REORDER = "echo_reorder"
ECHO_CROSSTALK = "echo_crosstalk"
UNEXPECTED_DATA = "unexpected_data"
HTTP_STATUS = "http_status"
HTTP_FRAMING = "http_framing"
# The server closed the connection: before any reply on it (``closed``), or in the middle
# of a reply (``closed_mid_reply``). A close after a complete reply is a graceful
# keep-alive end, reopened and counted in ``reconnects``, not an error (HTTP only).
CLOSED = "closed"
CLOSED_MID_REPLY = "closed_mid_reply"


class VerifyError(Exception):
    """A reply that is not what was asked for; ``kind`` is the error counter name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind
