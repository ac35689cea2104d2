"""``fdset-overflow``: what CPython's ``ValueError`` hides, in C (``lab/c/fdset_overflow.c``).

``FD_SET`` with a descriptor number >= ``FD_SETSIZE`` writes past the ``fd_set`` bitmap:
silent memory corruption in a plain build, an abort when glibc's ``_FORTIFY_SOURCE``
checks are compiled in. ``poll`` takes the same descriptor without a limit. The demo
compiles the program with the system C compiler (``cc``); without one it cannot run and
says so.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.demos.base import Case, Demo

SOURCE = Path(__file__).resolve().parent.parent / "c" / "fdset_overflow.c"
PLAIN_FLAGS = ("-O0", "-U_FORTIFY_SOURCE")
FORTIFIED_FLAGS = ("-O2", "-D_FORTIFY_SOURCE=2", "-w")  # -w: the warning is the point
RUN_TIMEOUT_S = 10.0


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def unavailable() -> str | None:
    """Why the demo cannot run here, or None."""
    return None if compiler() else "no C compiler (cc or gcc) on PATH; install gcc"


@dataclass(frozen=True)
class Counts:
    fd: int
    guard_bytes_changed: int
    ready: int
    fortified_build: str
    """What the same call does when built with -D_FORTIFY_SOURCE=2."""


def build(flags: tuple[str, ...], out: Path) -> Path:
    cc = compiler()
    if cc is None:
        raise RuntimeError(unavailable())
    subprocess.run([cc, *flags, "-o", str(out), str(SOURCE)], check=True, capture_output=True,
                   timeout=120)  # fmt: skip
    return out


def run(binary: Path, call: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), call], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)  # fmt: skip


def parse(stdout: str) -> dict[str, int]:
    return {k: int(v) for k, v in (pair.split("=") for pair in stdout.split())}


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    if proc.returncode < 0:
        return f"killed by {signal.Signals(-proc.returncode).name}: {proc.stderr.strip()[:80]}"
    return f"exit {proc.returncode}, {proc.stdout.split()[-1] if proc.stdout else 'no output'}"


def measure(call: str) -> Counts:
    with tempfile.TemporaryDirectory(prefix="muxlab-c-") as tmp:
        plain = run(build(PLAIN_FLAGS, Path(tmp) / "plain"), call)
        if plain.returncode != 0:
            raise RuntimeError(f"fdset_overflow {call} failed: {plain.stderr.strip()}")
        fortified = run(build(FORTIFIED_FLAGS, Path(tmp) / "fortified"), call)
    values = parse(plain.stdout)
    ready = values.get("select_ready", values.get("poll_ready", -1))
    return Counts(values["fd"], values["guard_bytes_changed"], ready, describe(fortified))


def shows_bug(counts: Counts) -> bool:
    """Memory next to the fd_set changed: silent corruption."""
    return counts.guard_bytes_changed > 0


DEMO = Demo(
    name="fdset-overflow",
    summary="C: FD_SET past descriptor 1023 writes past the fd_set; poll takes it",
    did=(
        "a C program (lab/c/fdset_overflow.c, built with the system compiler) moves a "
        "readable pipe to descriptor 1030, then either puts it in an fd_set that sits right "
        "before a zeroed guard array and calls select, or calls poll on it; the guard bytes "
        "changed are counted; each is also run as a -D_FORTIFY_SOURCE=2 build"
    ),
    why=(
        "an fd_set is a bitmap of FD_SETSIZE (1024) bits; FD_SET(1030) sets bit 6 of the "
        "byte after it, whatever lives there, and select reads nfds bits, past the set, so "
        "it even reports the descriptor ready: corruption that looks like success. glibc's "
        "fortified FD_SET checks the number and aborts ('bit out of range'). CPython checks "
        "and raises ValueError. poll and epoll have no such bitmap."
    ),
    man='select(2), "BUGS" and the WARNING in DESCRIPTION; feature_test_macros(7), _FORTIFY_SOURCE',
    naive=Case("select, FD_SET(1030) in a plain build", "select"),
    fixed=(Case("poll on descriptor 1030", "poll"),),
    measure=measure,
    shows_bug=shows_bug,
    unavailable=unavailable,
)
