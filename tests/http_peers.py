"""HTTP servers as a user would run them, for the load generator's interoperability tests."""

from __future__ import annotations

from servers.peers import NginxServer


class DefaultKeepaliveNginx(NginxServer):
    """nginx with its default ``keepalive_requests`` (1000) and ``keepalive_timeout`` (75 s):
    the project's peer configuration minus the two lines that lift those limits."""

    def config_text(self, directory: str, port: int) -> str:
        text = super().config_text(directory, port)
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if not line.strip().startswith(("keepalive_",))]
        assert len(lines) - len(kept) == 2, "the peer configuration changed: update this"
        return "".join(kept)
