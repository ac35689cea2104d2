"""HTTP servers for the load generator's tests: small threaded stubs with one behaviour
each, and nginx as a user would run it."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


class _Stub(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


StubFactory = Callable[[type[socketserver.BaseRequestHandler]], int]


@contextmanager
def stub_servers() -> Iterator[StubFactory]:
    """Threaded loopback HTTP stubs; shut down and closed on leaving."""
    started: list[_Stub] = []

    def start(handler: type[socketserver.BaseRequestHandler]) -> int:
        server = _Stub(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        port: int = server.server_address[1]
        return port

    try:
        yield start
    finally:
        for server in started:
            server.shutdown()
            server.server_close()


class Replier(socketserver.BaseRequestHandler):
    """Answers each request head with ``reply(n)`` (n counts from 1 on the connection);
    ``reply`` returning None closes gracefully (FIN, then reads until the client closes,
    as nginx's lingering close does, so late requests are not answered with a reset)."""

    def reply(self, n: int) -> bytes | None:
        raise NotImplementedError

    def closes_after(self, n: int) -> bool:
        return False

    def handle(self) -> None:
        sock: socket.socket = self.request
        pending = b""
        n = 0
        while data := sock.recv(65536):
            pending += data
            while b"\r\n\r\n" in pending:
                _, pending = pending.split(b"\r\n\r\n", 1)
                n += 1
                reply = self.reply(n)
                if reply is None:
                    self.linger_close()
                    return
                self.send(reply)
                if self.closes_after(n):
                    self.linger_close()
                    return

    def send(self, reply: bytes) -> None:
        self.request.sendall(reply)

    def linger_close(self) -> None:
        sock: socket.socket = self.request
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5.0)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass


def replier(
    reply: Callable[[int], bytes | None],
    closes_after: Callable[[int], bool] = lambda n: False,
    send: Callable[[socket.socket, bytes], None] | None = None,
) -> type[socketserver.BaseRequestHandler]:
    class Handler(Replier):
        def reply(self, n: int) -> bytes | None:
            return reply(n)

        def closes_after(self, n: int) -> bool:
            return closes_after(n)

        def send(self, data: bytes) -> None:
            if send is None:
                self.request.sendall(data)
            else:
                send(self.request, data)

    return Handler
