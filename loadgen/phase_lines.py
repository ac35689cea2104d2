"""The phase lines: ``muxlab load --phase-lines`` says on stdout when its window opens and
closes, so that another process can read a server's counters at the same two instants.

This module both writes and parses them; nothing else spells them out. Each line is
printed and flushed as the runner announces the phase (``loadgen.runner``), within
microseconds of the workers' own window edges on the shared ``CLOCK_MONOTONIC``.
"""

from __future__ import annotations

from typing import Literal, get_args

# "measure": the measurement window opened; "end": it closed.
Phase = Literal["measure", "end"]
PHASES: tuple[Phase, ...] = get_args(Phase)
PREFIX = "muxlab load: phase "


def phase_line(phase: Phase) -> str:
    """The line announcing ``phase``, without its newline."""
    return PREFIX + phase


def parse_phase_line(line: str) -> Phase | None:
    """The phase ``line`` announces (trailing whitespace ignored); None for other lines."""
    text = line.rstrip()
    if not text.startswith(PREFIX):
        return None
    name = text[len(PREFIX) :]
    for phase in PHASES:
        if name == phase:
            return phase
    return None
