"""HTTP/1.1: fixed requests, replies framed and checked as RFC 9112 says a client must.

Requests are one fixed request (``--method``, ``--path``, ``--header``; no body), sent
``pipeline`` at a time. A reply must be ``HTTP/1.x 2xx`` (1xx interim replies are
skipped); its body is framed by ``Content-Length``, by ``Transfer-Encoding: chunked``
(RFC 9112 7.1), or, with neither, by the server's close (RFC 9112 6.3, item 8; HTTP/1.0
style). ``Connection: close`` (or an HTTP/1.0 reply without ``keep-alive``) ends the
connection after that reply.

A server's close after a complete reply is the end of a keep-alive connection, not an
error (nginx closes every 1000th by default, ``keepalive_requests``): the client reopens
the connection, resends the requests still unanswered on it (GET is idempotent, RFC 9110
9.2.2) and counts a reconnect. A close in the middle of a reply (``closed_mid_reply``),
a close before any reply with requests outstanding (``closed``), a non-2xx status
(``http_status``), a malformed reply (``http_framing``: anything llhttp rejects, such as
a conflicting or repeated ``Content-Length``, ``Content-Length`` with
``Transfer-Encoding``, an overflowing length, obs-fold) and bytes nobody asked for
(``unexpected_data``) are errors and end the connection for good.

The hot loop accepts a reply identical to the last verified one with one comparison
(``known``), so the parser runs only when a reply differs (nginx's ``Date`` changes once
a second, a reconnect's ``Connection: close``) or arrives in pieces.

Parser choice, measured side by side in one run (``pytest --benchmark-only
benchmarks/test_http_parser.py``; 2-core shared development VM, 100 pipelined nginx
replies of 159 bytes, each with another ``Date`` so that no shortcut applies; median of
the rounds, two runs): the hand-written parser this module used to have
(``benchmarks/hand_http_parser.py``) took 5.3-5.4 us per reply, httptools (llhttp, the
parser behind Node.js and uvicorn) with this module's callbacks 1.04 us, 5.1x less.
So httptools parses; one parser per connection keeps the state of a
reply received in pieces, so a partial reply is never parsed twice. A server whose
every reply differs therefore costs the client a fraction of a microsecond per reply
more than one that repeats itself. llhttp cannot be told that a reply answers ``HEAD``
(whose ``Content-Length`` announces no body), so ``--method HEAD`` is refused.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httptools

from loadgen.config import LoadConfig
from loadgen.connection import Conn
from loadgen.protocols.base import RECV_BYTES, FailCallback, ProtocolClient, ReopenCallback
from loadgen.verify import (
    CLOSED,
    CLOSED_MID_REPLY,
    HTTP_FRAMING,
    HTTP_STATUS,
    UNEXPECTED_DATA,
    VerifyError,
)

if TYPE_CHECKING:
    from loadgen.messages import WorkerSpec
    from loadgen.worker import Worker


def build_request(method: str, path: str, headers: tuple[tuple[str, str], ...], host: str) -> bytes:
    """The request line and head; ``Host`` is added unless ``headers`` has one."""
    lines = [f"{method} {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ReplyFramer:
    """One connection's reply parser: httptools calls these methods as a reply goes by.

    ``begun``/``done`` count final replies begun and completed (1xx interim replies are
    not replies); the flags say what the replies completed so far require.
    """

    __slots__ = ("bad_status", "begun", "close", "done", "framed", "head_done", "interim",
                 "parser")  # fmt: skip

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.begun = 0
        self.done = 0
        self.bad_status = False  # a final reply with a status other than 2xx
        self.close = False  # the last reply completed ends the connection
        self.head_done = False  # the current reply's head is complete: its body comes
        self.framed = False  # the current reply has Content-Length or Transfer-Encoding
        self.interim = False

    def feed(self, data: bytes) -> None:
        """Parse ``data``; :class:`VerifyError` if it is not HTTP/1.x replies."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            raise VerifyError(HTTP_FRAMING) from None

    @property
    def partial(self) -> bool:
        return self.begun > self.done

    def body_ends_at_close(self) -> bool:
        """The reply under way has its head and no framing: the close completes it."""
        return self.partial and self.head_done and not self.framed

    def on_message_begin(self) -> None:
        self.begun += 1
        self.head_done = self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        self.head_done = True
        self.interim = 100 <= status < 200
        if not self.interim and not 200 <= status < 300:
            self.bad_status = True

    def on_message_complete(self) -> None:
        if self.interim:
            self.begun -= 1
            return
        self.done += 1
        if not self.parser.should_keep_alive():
            self.close = True


class HttpClient(ProtocolClient):
    def __init__(self, spec: WorkerSpec, fail: FailCallback, reopen: ReopenCallback) -> None:
        super().__init__(spec, fail, reopen)
        self.request = spec.request
        self.known = b""  # the last reply verified in full
        self.known_mult: list[bytes | None] = [None] * (spec.pipeline + 1)

    @classmethod
    def fixed_request(cls, config: LoadConfig, authority: str) -> bytes:
        return build_request(config.method, config.path, config.headers, authority)

    def payload(self, c: Conn, n: int) -> bytes:
        return self.request * n

    def rearm(self, c: Conn) -> None:
        c.expect = None if c.partial else self.known_mult[len(c.sent)]

    def absorb(self, c: Conn, data: bytes) -> int:
        if not data:
            return self._eof(c)
        framer = c.framer
        if not isinstance(framer, ReplyFramer):
            framer = c.framer = ReplyFramer()
        outstanding = len(c.sent)
        done_before = framer.done
        from_boundary = not framer.partial
        try:
            framer.feed(data)
        except VerifyError as exc:
            # Garbage after every owed reply was complete is data nobody asked for.
            self.fail(c, UNEXPECTED_DATA if framer.done - done_before >= outstanding else exc.kind)
            return -1
        replies = framer.done - done_before
        if framer.bad_status:
            self.fail(c, HTTP_STATUS)
            return -1
        if framer.begun - done_before > outstanding:
            self.fail(c, UNEXPECTED_DATA)
            return -1
        c.partial = framer.partial
        c.replies += replies
        if framer.close:
            ok = self.reopen(c, self.request * (outstanding - replies))
            return replies if ok else -1
        if replies and from_boundary and not c.partial:
            self._remember(data, replies)
        return replies

    def _remember(self, data: bytes, replies: int) -> None:
        """Keep ``data``'s reply as the one the fast path accepts, when all are the same."""
        size, rest = divmod(len(data), replies)
        reply = data[:size] if replies > 1 else data
        if rest or reply == self.known or (replies > 1 and data != reply * replies):
            return
        self.known = reply
        self.known_mult[:] = [None] + [reply * k for k in range(1, self.spec.pipeline + 1)]

    def _eof(self, c: Conn) -> int:
        """The server closed: the end of a reply, of a keep-alive connection, or an error."""
        outstanding = len(c.sent)
        framer = c.framer
        if isinstance(framer, ReplyFramer) and framer.partial:
            if not framer.body_ends_at_close() or framer.bad_status:
                self.fail(c, CLOSED_MID_REPLY)
                return -1
            c.replies += 1  # the close is the end of this reply's body
            return 1 if self.reopen(c, self.request * (outstanding - 1)) else -1
        if outstanding and not c.replies:
            # Nothing answered on this connection yet: reopening could loop forever.
            self.fail(c, CLOSED)
            return -1
        self.reopen(c, self.request * outstanding)
        return -1

    def closed_loop(self, w: Worker) -> None:
        # EchoClient.closed_loop with a fixed request, duplicated on purpose (see there).
        # A reply identical to the last verified one is accepted by c.expect (that reply
        # times the requests owed); as the owed count is the same after the refill,
        # c.expect only changes after the slow path.
        window = w.window
        assert window is not None
        conns = w.conns
        poll = w.ep.poll
        clock = time.monotonic_ns
        absorb = self.absorb
        other_event = w.other_event
        fail = w.fail
        error_kind = w.error_kind
        send_or_queue = w.send_or_queue
        request = self.request
        known_mult = self.known_mult
        lat_append = window.recorder.pending.append
        per_second = window.per_second
        measure_start_ns = window.phases.measure_start_ns
        recv_bytes = RECV_BYTES
        read_only = w.READ_ONLY
        done_total, bytes_in, bytes_out = w.done_total, w.bytes_in, w.bytes_out
        sending = True
        measuring = False
        next_tick_ns = 0
        now = clock()
        while True:
            events = poll((next_tick_ns - now) / 1e9 if next_tick_ns > now else 0)
            now = clock()
            if now >= next_tick_ns:
                w.done_total, w.bytes_in, w.bytes_out = done_total, bytes_in, bytes_out
                if not w.tick(now):
                    return
                next_tick_ns = w.next_tick_ns
                sending = w.sending
                measuring = window.measuring
            completed = 0
            for fd, ev in events:
                c = conns.get(fd)
                if c is None:
                    continue
                if ev != read_only and not other_event(c, ev):
                    continue
                try:
                    data = c.recv(recv_bytes)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    fail(c, error_kind(exc.errno or 0))
                    continue
                bytes_in += len(data)
                sent = c.sent
                if data == c.expect:
                    n = len(sent)
                else:
                    n = absorb(c, data)
                    c.expect = None  # recomputed below, once the owed count is known
                    if n <= 0:
                        continue
                completed += n
                if n == 1:
                    lat_append(now - sent.popleft())
                else:
                    for _ in range(n):
                        lat_append(now - sent.popleft())
                if not sending:
                    c.expect = None if c.partial else known_mult[len(sent)]
                    continue
                payload = request if n == 1 else request * n
                t = clock()
                if not send_or_queue(c, payload):
                    continue
                bytes_out += len(payload)
                if n == 1:
                    sent.append(t)
                else:
                    sent.extend([t] * n)
                if c.expect is None and not c.partial:
                    c.expect = known_mult[len(sent)]
            done_total += completed
            if measuring and completed:
                per_second[(now - measure_start_ns) // 1_000_000_000] += completed
