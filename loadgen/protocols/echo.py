"""Echo: every byte sent must come back, in order, on the same connection.

Every message is ``connection id (u32 LE) | sequence number (u64 LE) | filler`` and the
reply stream of a connection must be byte for byte the stream it sent. The hot loop
compares whole replies with one ``==``; only when that fails does :func:`classify_echo`
look closer, telling apart a message from another connection (cross-talk), a message of
this connection out of order (reorder), bytes nobody sent (corrupt) and bytes after
everything was answered (unexpected). Any close by the server is an error (``closed``):
an echo connection has no graceful end.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from loadgen.config import ECHO_HEADER_BYTES
from loadgen.connection import Conn
from loadgen.protocols.base import RECV_BYTES, FailCallback, ProtocolClient, ReopenCallback
from loadgen.verify import CLOSED, ECHO_CORRUPT, ECHO_CROSSTALK, ECHO_REORDER, UNEXPECTED_DATA

if TYPE_CHECKING:
    from loadgen.messages import WorkerSpec
    from loadgen.worker import Worker

ECHO_HEADER = struct.Struct("<IQ")
assert ECHO_HEADER.size == ECHO_HEADER_BYTES


def echo_filler(size_bytes: int) -> bytes:
    """The bytes after the header: a fixed, non-repeating-looking pattern."""
    n = size_bytes - ECHO_HEADER_BYTES
    return bytes((i * 131 + 17) & 0xFF for i in range(n))


def echo_message(cid: int, seq: int, filler: bytes) -> bytes:
    return ECHO_HEADER.pack(cid, seq) + filler


def _first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n
    # Binary search on equal prefixes: the slow path stays cheap for megabyte messages.
    while lo < hi:
        mid = (lo + hi) // 2
        if a[lo : mid + 1] == b[lo : mid + 1]:
            lo = mid + 1
        else:
            hi = mid
    return lo


def classify_echo(
    expected: bytes | None,
    data: bytes,
    got_bytes: int,
    filler: bytes,
    cid: int,
    next_seq: int,
    connections: int,
) -> str:
    """The kind of mismatch between the outstanding ``expected`` bytes and ``data``.

    ``got_bytes`` is how much of the first outstanding message had already arrived, so
    message boundaries in ``data`` are at ``size - got_bytes`` and every ``size`` after.
    """
    if not expected:
        return UNEXPECTED_DATA
    i = _first_difference(expected, data)
    if i >= len(expected):
        return UNEXPECTED_DATA
    size = ECHO_HEADER_BYTES + len(filler)
    start = i - (got_bytes + i) % size
    if start < 0 or start + size > len(data):
        return ECHO_CORRUPT  # the message with the bad byte is not whole here: no header
    got = data[start : start + size]
    rcid, rseq = ECHO_HEADER.unpack_from(got)
    if rcid != cid and rcid < connections and got == echo_message(rcid, rseq, filler):
        return ECHO_CROSSTALK
    if rcid == cid and rseq < next_seq and got == echo_message(cid, rseq, filler):
        return ECHO_REORDER
    return ECHO_CORRUPT


class EchoClient(ProtocolClient):
    def __init__(self, spec: WorkerSpec, fail: FailCallback, reopen: ReopenCallback) -> None:
        super().__init__(spec, fail, reopen)
        self.filler = echo_filler(spec.size_bytes)

    def payload(self, c: Conn, n: int) -> bytes:
        seq = c.seq
        payload = b"".join([echo_message(c.cid, s, self.filler) for s in range(seq, seq + n)])
        c.seq = seq + n
        self.owe(c, payload)
        return payload

    def rearm(self, c: Conn) -> None:
        """Nothing to do: :meth:`owe` keeps ``c.expect`` up to date as requests leave."""

    def absorb(self, c: Conn, data: bytes) -> int:
        if not data:
            self.fail(c, CLOSED)
            return -1
        owed, pos = c.owed, c.owed_pos
        matched = 0
        while matched < len(data) and owed:
            head = owed[0]
            take = min(len(head) - pos, len(data) - matched)
            piece = data if take == len(data) else data[matched : matched + take]
            if not head.startswith(piece, pos):
                break
            matched += take
            pos += take
            if pos == len(head):
                owed.popleft()
                pos = 0
        if matched < len(data):
            expected = data[:matched] + b"".join(owed)[pos:]
            self.fail(c, classify_echo(expected or None, data, c.got, self.filler, c.cid,
                                       c.seq, self.spec.all_active))  # fmt: skip
            return -1
        c.owed_pos = pos
        c.expect = owed[0] if len(owed) == 1 and pos == 0 else None
        got = c.got + len(data)
        c.got = got % self.spec.size_bytes
        return got // self.spec.size_bytes

    def owe(self, c: Conn, payload: bytes) -> None:
        """``payload`` was sent; it is owed after whatever is still unanswered."""
        owed = c.owed
        owed.append(payload)
        if len(owed) == 1 and c.owed_pos == 0:
            c.expect = payload
            return
        owed_bytes = sum(map(len, owed)) - c.owed_pos
        if owed_bytes > RECV_BYTES:
            # More than one recv(2) returns: no single comparison can settle it, so the
            # slow path reads it.
            c.expect = None
            return
        # Small: one chunk again, so that a whole reply is accepted by one ==.
        joined = b"".join(owed)[c.owed_pos :]
        owed.clear()
        owed.append(joined)
        c.owed_pos = 0
        c.expect = joined

    def closed_loop(self, w: Worker) -> None:
        # The hot loop: flat on purpose, locals instead of attribute look-ups, one dict
        # look-up, one recv and one send per ready connection, one == to verify a whole
        # reply against everything the connection is owed, one list append to record a
        # latency. Anything unusual (partial replies or sends, errors, phase changes)
        # leaves for a method. HttpClient.closed_loop is the same loop with HTTP's bytes:
        # the duplication is deliberate, as one shared loop would pay a call per reply to
        # ask the protocol what to verify and what to send.
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
        owe = self.owe
        pack = ECHO_HEADER.pack
        filler = self.filler
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
                    continue  # closed earlier in this batch or by the last tick
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
                settled = data == c.expect
                if settled:
                    n = len(sent)
                    c.got = 0
                else:
                    n = absorb(c, data)
                    if n <= 0:
                        continue
                completed += n
                if n == 1:
                    lat_append(now - sent.popleft())
                else:
                    for _ in range(n):
                        lat_append(now - sent.popleft())
                if not sending:
                    if settled:
                        c.expect = None
                        c.owed.clear()
                    continue
                seq = c.seq
                if n == 1:
                    payload = pack(c.cid, seq) + filler
                else:
                    payload = b"".join([pack(c.cid, s) + filler for s in range(seq, seq + n)])
                c.seq = seq + n
                if settled:
                    c.owed[0] = payload  # the one chunk that c.expect stood for
                    c.expect = payload
                else:
                    owe(c, payload)
                t = clock()
                if not send_or_queue(c, payload):
                    continue
                bytes_out += len(payload)
                if n == 1:
                    sent.append(t)
                else:
                    sent.extend([t] * n)
            done_total += completed
            if measuring and completed:
                per_second[(now - measure_start_ns) // 1_000_000_000] += completed
