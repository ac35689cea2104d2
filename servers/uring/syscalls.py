"""The io_uring system calls from Python, and what the running kernel offers.

``syscall(2)`` through ``ctypes`` (glibc has no wrappers for the io_uring calls), one
prototype per call; ``io_uring_setup(2)`` with the newest flags the kernel accepts; and
the kernel releases that added what the binding uses.

Kernel coverage. The floor is 5.15 (the oldest long-term kernel current distributions
ship: Ubuntu 22.04, Debian 12 has 6.1, RHEL 9 5.14 with io_uring backports). Newer
features are used only where the kernel has them, decided once per ring (see
:class:`Capabilities`): ``IORING_SETUP_SINGLE_ISSUER`` (6.0) and
``IORING_SETUP_DEFER_TASKRUN`` (6.1) by trying ``io_uring_setup`` with them and
retrying without on ``EINVAL``; provided-buffer rings (5.19) by trying
``IORING_REGISTER_PBUF_RING``; opcodes by ``IORING_REGISTER_PROBE``; multishot recv
(6.0), which no probe reports, by the kernel release.
``MUXLAB_URING_KERNEL=5.15`` makes the binding behave as on that release (tests use it
to run the fallback paths on a new kernel).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

from servers.uring import abi

_libc = ctypes.CDLL(None, use_errno=True)


def _syscall_function(*argtypes: type[ctypes.c_long]) -> Callable[..., int]:
    """``syscall(2)`` with one prototype per use: it is variadic and reads every argument
    as a ``long``, so each is declared ``c_long`` (a Python int passed without a
    prototype is a 32-bit ``int``, and the upper half of the register is garbage)."""
    function = _libc["syscall"]  # indexing makes a new function object, ours to type
    function.restype = ctypes.c_long
    function.argtypes = (ctypes.c_long, *argtypes)
    typed: Callable[..., int] = function
    return typed


_L = ctypes.c_long
_setup_call = _syscall_function(_L, _L)
register_call = _syscall_function(_L, _L, _L, _L)
# io_uring_enter is the hot call, and declared argument types cost about 1 us per call
# here (each c_long conversion is a Python-level from_param): it is called untyped. Its
# int arguments are below 2**31 and travel in registers, which libffi fills whole
# (ffi64.c and the arm64 port sign-extend a SINT32); its pointer is a ctypes array or
# None (NULL). The seventh argument of syscall(2) goes on the stack on x86-64, where an
# untyped int fills only 4 of the slot's 8 bytes (the kernel then saw a garbage argsz
# and said EINVAL), so it is always a ready-made c_long.
enter_call = _libc["syscall"]
enter_call.restype = ctypes.c_long
NO_ARGSZ = ctypes.c_long(0)
GETEVENTS_ARGSZ = ctypes.c_long(abi.GETEVENTS_ARG.size)

# The oldest kernel the binding supports, and the releases that added what it uses.
MIN_KERNEL = (5, 15)
MULTISHOT_RECV_KERNEL = (6, 0)
SINGLE_ISSUER_KERNEL = (6, 0)
DEFER_TASKRUN_KERNEL = (6, 1)
BUFFER_RING_KERNEL = (5, 19)
KERNEL_OVERRIDE_ENV = "MUXLAB_URING_KERNEL"


class RingError(OSError):
    """A system call on the ring failed."""


def check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise RingError(err, f"{what}: {errno.errorcode.get(err, err)} ({os.strerror(err)})")
    return ret


def kernel_release() -> tuple[int, int]:
    """The kernel's (major, minor), or the one ``MUXLAB_URING_KERNEL`` pretends to be."""
    text = os.environ.get(KERNEL_OVERRIDE_ENV) or platform.release()
    parts = text.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


@dataclass(frozen=True)
class Capabilities:
    """What this ring may use, decided once when it is set up."""

    kernel: tuple[int, int]
    setup_flags: int
    features: int
    ops: frozenset[int]

    @property
    def multishot_recv(self) -> bool:
        return self.kernel >= MULTISHOT_RECV_KERNEL

    @property
    def buffer_ring(self) -> bool:
        return self.kernel >= BUFFER_RING_KERNEL

    @property
    def defer_taskrun(self) -> bool:
        return bool(self.setup_flags & abi.IORING_SETUP_DEFER_TASKRUN)


def _setup(entries: int, cq_entries: int, flags: int) -> tuple[int, tuple[int, ...]]:
    params = bytearray(abi.PARAMS.size)
    abi.PARAMS.pack_into(params, 0, 0, cq_entries, flags, *([0] * 25))
    buf = (ctypes.c_char * len(params)).from_buffer(params)
    fd = _setup_call(abi.SYS_IO_URING_SETUP, entries, ctypes.addressof(buf))
    del buf  # release the export so ``params`` can be read
    check(fd, "io_uring_setup")
    return fd, abi.PARAMS.unpack(params)


def _preferred_setup_flags(kernel: tuple[int, int]) -> int:
    flags = abi.IORING_SETUP_CQSIZE | abi.IORING_SETUP_CLAMP
    if kernel >= SINGLE_ISSUER_KERNEL:
        # The single issuer is the task that enables the rings; starting disabled lets a
        # server be built in one thread and run in another (the in-process tests do).
        flags |= abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_R_DISABLED
    if kernel >= DEFER_TASKRUN_KERNEL:
        flags |= abi.IORING_SETUP_DEFER_TASKRUN
    return flags


def setup(
    sq_entries: int, cq_entries: int, kernel: tuple[int, int]
) -> tuple[int, tuple[int, ...], int]:
    """``io_uring_setup(2)`` with the newest flags ``kernel`` may have: the ring's
    descriptor, its ``io_uring_params`` as a tuple, and the flags it was created with."""
    flags = _preferred_setup_flags(kernel)
    while True:
        try:
            fd, params = _setup(sq_entries, cq_entries, flags)
            return fd, params, flags
        except RingError as exc:
            # A kernel that predates a flag says EINVAL: drop the newest and retry.
            if exc.errno != errno.EINVAL or not flags & _OPTIONAL_SETUP_FLAGS:
                raise
            flags &= ~_highest_bit(flags & _OPTIONAL_SETUP_FLAGS)
            if not flags & abi.IORING_SETUP_SINGLE_ISSUER:
                flags &= ~abi.IORING_SETUP_R_DISABLED


_OPTIONAL_SETUP_FLAGS = abi.IORING_SETUP_SINGLE_ISSUER | abi.IORING_SETUP_DEFER_TASKRUN


def _highest_bit(value: int) -> int:
    return 1 << (value.bit_length() - 1)
