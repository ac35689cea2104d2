"""Small blocking clients for the contract tests; each checks bytes, never timings."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes, or fewer if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock: socket.socket, limit: int = 64 << 20) -> bytes:
    buf = bytearray()
    while len(buf) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def echo_chunks(sock: socket.socket, chunks: Sequence[bytes]) -> bytes:
    """Send ``chunks`` from a thread while reading the echo here; return what came back.

    Sending and reading at once is what an echo client must do: a server with
    backpressure stops reading from a client that does not read, so a client that sent
    4 MiB before reading anything would deadlock against a correct server.
    """
    total = sum(len(c) for c in chunks)
    errors: list[BaseException] = []

    def send_all() -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    received = recv_exactly(sock, total)
    sender.join(timeout=10)
    if errors:
        raise errors[0]
    return received


def http_exchange(sock: socket.socket, raw: bytes) -> bytes:
    """Send ``raw`` and read until the server closes or goes quiet."""
    sock.sendall(raw)
    buf = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        pass
    return bytes(buf)


def split_http_responses(data: bytes) -> list[tuple[int, bytes]]:
    """``(status, body)`` for each framed response in ``data``; fails on bad framing."""
    responses = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"unterminated response head: {data[:80]!r}"
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in lines[1:]
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        assert len(rest) >= length, "truncated body"
        responses.append((status, rest[:length]))
        data = rest[length:]
    return responses
