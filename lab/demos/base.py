"""What every demo is: a naive case that should show a bug, fixed cases that should not.

A demo measures each case with the same function and decides from the counts alone
whether that case shows the bug. The demo reproduced the documented behaviour when the
naive case shows it and no fixed case does; that decision is all the exit status says.
Because the decision is a function of counts, a test can swap a fixed handler into the
naive slot and check that the demo then reports "not reproduced". A demo may also
measure cases that are only shown beside these (``compared``): they do not decide.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Generic, TypeVar

H = TypeVar("H")
C = TypeVar("C")

TEXT_WIDTH = 88


@dataclass(frozen=True)
class Case(Generic[H]):
    label: str
    handler: H


@dataclass(frozen=True)
class Demo(Generic[H, C]):
    name: str
    summary: str
    """One line for ``muxlab demo --list``."""
    did: str
    why: str
    man: str
    """Where the behaviour is documented, e.g. ``epoll(7), "Possible pitfalls"``."""
    naive: Case[H]
    fixed: tuple[Case[H], ...]
    measure: Callable[[H], C]
    """Run one case and return its counts (a frozen dataclass)."""
    shows_bug: Callable[[C], bool]
    unavailable: Callable[[], str | None] = lambda: None
    """Why this machine cannot run the demo (a missing compiler), or None when it can."""
    verdicts: tuple[str, str] = ("shows the bug", "no bug")
    """How a case is described when ``shows_bug`` is true, and when it is false."""
    compared: tuple[Case[H], ...] = ()
    """Cases measured and shown beside the others, which do not decide the result."""
    summarize: Callable[[Sequence[Outcome]], str] | None = None
    """Lines printed after the observed counts (a side-by-side table), or None."""


@dataclass(frozen=True)
class Outcome:
    label: str
    role: str
    counts: dict[str, Any]
    shows_bug: bool


@dataclass(frozen=True)
class DemoReport:
    name: str
    reproduced: bool
    outcomes: tuple[Outcome, ...]
    text: str

    @property
    def exit_status(self) -> int:
        return 0 if self.reproduced else 1


def run_demo(demo: Demo[Any, Any]) -> DemoReport:
    """Measure every case; reproduced when only the naive case shows the bug."""
    outcomes = [_outcome(demo, demo.naive, "naive")]
    outcomes += [_outcome(demo, case, "fixed") for case in demo.fixed]
    deciding = list(outcomes)
    outcomes += [_outcome(demo, case, "compared") for case in demo.compared]
    reproduced = deciding[0].shows_bug and not any(o.shows_bug for o in deciding[1:])
    return DemoReport(
        name=demo.name,
        reproduced=reproduced,
        outcomes=tuple(outcomes),
        text=format_report(demo, outcomes, reproduced),
    )


def _outcome(demo: Demo[Any, Any], case: Case[Any], role: str) -> Outcome:
    counts = demo.measure(case.handler)
    if not is_dataclass(counts) or isinstance(counts, type):
        raise TypeError(f"{demo.name}: measure must return a dataclass instance")
    return Outcome(case.label, role, asdict(counts), bool(demo.shows_bug(counts)))


def format_report(demo: Demo[Any, Any], outcomes: list[Outcome], reproduced: bool) -> str:
    def para(title: str, body: str) -> str:
        return textwrap.fill(body, TEXT_WIDTH, initial_indent=f"{title}: ", subsequent_indent="  ")

    lines = [f"muxlab demo {demo.name}: {demo.summary}", para("did", demo.did), "observed:"]
    for o in outcomes:
        verdict = demo.verdicts[0] if o.shows_bug else demo.verdicts[1]
        lines.append(f"  [{o.role}] {o.label}: {verdict}")
        counts = ", ".join(f"{k}={v}" for k, v in o.counts.items())
        lines.append(
            textwrap.fill(counts, TEXT_WIDTH, initial_indent="      ", subsequent_indent="      ")
        )
    if demo.summarize is not None:
        lines.append(demo.summarize(outcomes))
    lines += [para("why", demo.why), para("see", demo.man)]
    if reproduced:
        lines.append("result: reproduced (the naive case shows the bug, every fixed case does not)")
    else:
        lines.append("result: NOT reproduced (see the observed counts above)")
    return "\n".join(lines)


def unread_bytes(fd: int) -> int:
    """Bytes waiting in a socket's receive queue (``FIONREAD``, ``unix(7)``/``tcp(7)``)."""
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    count: int = struct.unpack("i", raw)[0]
    return count


def send_until_eagain(sock: socket.socket, outbox: bytearray) -> int:
    """Send from ``outbox`` on a non-blocking socket until it is empty or the kernel's send
    buffer is full (EAGAIN); remove what was sent and return its length.

    A non-blocking ``send`` may take only part of the buffer (``send(2)``: "the call may
    return ... the number of bytes sent"); ``sendall`` on a non-blocking socket raises
    ``BlockingIOError`` after sending an unknown part, so handlers never use it.
    """
    sent = 0
    while outbox:
        try:
            n = sock.send(outbox)
        except BlockingIOError:
            break
        del outbox[:n]
        sent += n
    return sent
