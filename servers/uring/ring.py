"""One io_uring instance: set up, mmap the rings, queue SQEs, enter, reap CQEs.

The binding, and why this one. Two were measured: the ``liburing`` package on PyPI
(Python and Zig over C liburing 2.15) and this module, ``ctypes`` and ``mmap`` over the
kernel ABI (:mod:`servers.uring.abi`). Round trip from Python (one SQE, one
``io_uring_enter`` that submits it and waits, reap the CQE), median of 15 interleaved
rounds of 1,000 on the shared 2-CPU development VM
(``python -m benchmarks.test_uring_binding``):

===========================  ===========  ========================
operation                    liburing     ctypes/mmap (this module)
===========================  ===========  ========================
``NOP``                      0.9-1.4 us   4.0-4.4 us
``POLL_ADD``, fd readable    1.9 us       4.4-4.6 us
===========================  ===========  ========================

(The ranges are the medians of separate runs; within a run the spread across rounds
was about 2x for both, the machine being shared.) liburing is 2-4x cheaper per round
trip: each of its calls is compiled code, where this module pays for ``struct``
packing, a ``ctypes`` foreign call (about 1 us here, most of it argument conversion)
and the CQ copy in Python. It loses on coverage: it requires Linux 6.14, which no
long-term distribution kernel has (Debian 12 ships 6.1, Ubuntu 24.04 6.8), while this
module runs on 5.15 and later. The servers pay the difference once per loop turn (one
``io_uring_enter``), not once per request when a turn carries many completions, so
coverage decided: this module, measured against liburing in
``benchmarks/test_uring_binding.py`` so the price stays visible.

What the kernel does (``io_uring(7)``): ``io_uring_setup(2)`` creates two rings in memory
shared with the process. The program writes 64-byte submission queue entries (SQEs) into
the SQ and moves the SQ tail; ``io_uring_enter(2)`` makes the kernel consume every SQE up
to that tail (one system call for any number of operations) and, with
``IORING_ENTER_GETEVENTS``, sleep until ``min_complete`` completions are in the CQ. Each
completion is a 16-byte CQE (``user_data`` copied from the SQE, ``res`` the result or
``-errno``, ``flags``); the program reads them and moves the CQ head. Reading the CQ
costs no system call at all.

Kernel coverage (5.15 and later, newer features where the kernel has them) and the
system calls themselves are in :mod:`servers.uring.syscalls`; the provided-buffer
ring and payload addresses in :mod:`servers.uring.buffers`.

Memory ordering. The kernel's side of the rings uses acquire/release operations
(``smp_load_acquire`` of the SQ tail, ``smp_store_release`` of the CQ tail); Python
cannot issue a fence, and a ``memoryview`` store is a plain aligned 32-bit store. That is
still correct here, for these reasons, and only with them:

- SQ side: this process writes SQEs and the SQ tail, and the kernel reads them only
  inside ``io_uring_enter`` called by this same thread (no ``IORING_SETUP_SQPOLL``,
  never: a kernel thread polling the SQ on another CPU would need a release store). A
  thread's own stores are visible to itself, in program order, across the system call,
  and a migration to another CPU is a full barrier.
- CQ side: with ``IORING_SETUP_DEFER_TASKRUN`` (6.1), every CQE is posted by this thread,
  inside ``io_uring_enter(GETEVENTS)`` (the kernel runs the completion work there and
  nowhere else; that is what the flag means), so the CQEs and the CQ tail are written
  by the thread that reads them, before the call returns. Without it (5.15 to 6.0),
  completions may be posted from other CPUs (io-wq workers, task work run on return to
  user space); then loading the tail before the CQEs relies on the CPU not reordering
  two loads, and storing the head after reading the CQEs on it not letting a store pass
  an earlier load. x86-64 (TSO) guarantees both; arm64 and other weakly ordered CPUs do
  not, so there :func:`unavailable_reason` refuses a kernel without DEFER_TASKRUN.
- Each CQE batch is copied out (``struct.iter_unpack`` into a list) before the CQ head
  is stored, so the kernel never overwrites an entry being read. The provided-buffer
  ring is the SQ case again: entries are written before their tail, and the kernel reads
  them while serving a receive for this thread.

Man pages: ``io_uring(7)``, ``io_uring_setup(2)``, ``io_uring_enter(2)``,
``io_uring_register(2)``; liburing's ``src/queue.c`` and ``src/setup.c`` do the same
steps in C.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import platform
from dataclasses import dataclass
from typing import Protocol

from servers.uring import abi
from servers.uring.syscalls import (
    GETEVENTS_ARGSZ,
    MIN_KERNEL,
    NO_ARGSZ,
    Capabilities,
    RingError,
    check,
    enter_call,
    kernel_release,
    register_call,
    setup,
)

# Architectures whose memory model keeps loads in order and stores after earlier loads
# (see "Memory ordering" above): there, a kernel without DEFER_TASKRUN is fine too.
_TSO_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686"})


@dataclass(slots=True)
class EnterCounts:
    """System calls and queue traffic of a ring; :class:`servers.counters.Counters` has
    the same fields, so a server passes its own counters in and they are counted there."""

    uring_enters: int = 0
    uring_sqes: int = 0
    uring_cqes: int = 0


class _Counts(Protocol):
    """The attributes :class:`Ring` increments (any object that has them will do)."""

    uring_enters: int
    uring_sqes: int
    uring_cqes: int


class Ring:
    """An io_uring instance used from one thread (``IORING_SETUP_SINGLE_ISSUER``)."""

    def __init__(
        self, sq_entries: int = 1024, cq_entries: int = 8192, counts: _Counts | None = None
    ) -> None:
        kernel = kernel_release()
        fd, params, flags = setup(sq_entries, cq_entries, kernel)
        self.fd = fd
        self.counts: _Counts = counts if counts is not None else EnterCounts()
        self._maps: list[mmap.mmap] = []
        try:
            self._map_rings(params)
            self.capabilities = Capabilities(kernel, flags, params[abi.PARAMS_FEATURES_INDEX],
                                             self._probe())  # fmt: skip
        except BaseException:
            self.close()
            raise
        self._enter_args = self._make_enter_args()
        self._disabled = bool(flags & abi.IORING_SETUP_R_DISABLED)

    # -- setup ---------------------------------------------------------------------------

    def _map_rings(self, params: tuple[int, ...]) -> None:
        self.sq_entries, self.cq_entries = params[0], params[1]
        sq_head, sq_tail, sq_mask, _, _, _, sq_array = params[
            abi.SQ_OFF_INDEX : abi.SQ_OFF_INDEX + 7
        ]
        cq_head, cq_tail, cq_mask, _, _, cqes, _ = params[abi.CQ_OFF_INDEX : abi.CQ_OFF_INDEX + 7]
        sq_size = sq_array + self.sq_entries * 4
        cq_size = cqes + self.cq_entries * abi.CQE.size
        if params[abi.PARAMS_FEATURES_INDEX] & abi.IORING_FEAT_SINGLE_MMAP:
            sq_map = cq_map = self._map(max(sq_size, cq_size), abi.IORING_OFF_SQ_RING)
        else:
            sq_map = self._map(sq_size, abi.IORING_OFF_SQ_RING)
            cq_map = self._map(cq_size, abi.IORING_OFF_CQ_RING)
        sqes_map = self._map(self.sq_entries * abi.SQE.size, abi.IORING_OFF_SQES)
        sq = memoryview(sq_map)
        cq = memoryview(cq_map)
        self._sq_mask = sq[sq_mask : sq_mask + 4].cast("I")[0]
        self._cq_mask = cq[cq_mask : cq_mask + 4].cast("I")[0]
        self._sq_tail_word = sq[sq_tail : sq_tail + 4].cast("I")
        self._sq_tail = self._sq_tail_word[0]
        self._sq_head_word = sq[sq_head : sq_head + 4].cast("I")
        self._cq_head_word = cq[cq_head : cq_head + 4].cast("I")
        self._cq_tail_word = cq[cq_tail : cq_tail + 4].cast("I")
        self._cqes = cq[cqes : cqes + self.cq_entries * abi.CQE.size]
        self._sqes = memoryview(sqes_map)
        # The SQ array maps ring slots to SQE indexes; slot i always holds SQE i, so it is
        # written once here and the hot path only moves the tail (liburing does the same).
        array = sq[sq_array : sq_array + self.sq_entries * 4].cast("I")
        for i in range(self.sq_entries):
            array[i] = i
        self._pending = 0

    def _map(self, length: int, offset: int) -> mmap.mmap:
        mapped = mmap.mmap(
            self.fd,
            length,
            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=offset,
        )
        self._maps.append(mapped)
        return mapped

    def _probe(self) -> frozenset[int]:
        size = abi.PROBE_HEADER.size + abi.PROBE_OPS * abi.PROBE_OP.size
        buf = ctypes.create_string_buffer(size)
        self.register(abi.IORING_REGISTER_PROBE, ctypes.addressof(buf), abi.PROBE_OPS, "probe")
        last_op, ops_len = abi.PROBE_HEADER.unpack_from(buf.raw)[:2]
        supported = set()
        for i in range(min(ops_len, abi.PROBE_OPS)):
            op, _, flags, _ = abi.PROBE_OP.unpack_from(buf.raw, abi.PROBE_HEADER.size + i * 8)
            if flags & abi.IO_URING_OP_SUPPORTED and op <= last_op:
                supported.add(op)
        return frozenset(supported)

    def _make_enter_args(self) -> tuple[ctypes.Array[ctypes.c_char], ctypes.Array[ctypes.c_char]]:
        timespec = ctypes.create_string_buffer(abi.TIMESPEC.size)
        arg = ctypes.create_string_buffer(abi.GETEVENTS_ARG.size)
        abi.GETEVENTS_ARG.pack_into(arg, 0, 0, 0, 0, ctypes.addressof(timespec))
        return arg, timespec

    def register(self, opcode: int, arg: int, nr_args: int, what: str) -> int:
        """``io_uring_register(2)``; raises :class:`RingError` naming ``what``."""
        return check(
            register_call(abi.SYS_IO_URING_REGISTER, self.fd, opcode, arg, nr_args),
            f"io_uring_register({what})",
        )

    # -- the hot path --------------------------------------------------------------------

    def prep(
        self,
        opcode: int,
        fd: int,
        user_data: int,
        addr: int = 0,
        length: int = 0,
        op_flags: int = 0,
        sqe_flags: int = 0,
        ioprio: int = 0,
        buf_group: int = 0,
    ) -> None:
        """Write one SQE; it goes to the kernel with the next :meth:`enter`."""
        if self._pending >= self.sq_entries:
            self.enter(0, 0.0)  # the SQ is full: hand it over before writing more
        slot = self._sq_tail & self._sq_mask
        abi.SQE.pack_into(self._sqes, slot * 64, opcode, sqe_flags, ioprio, fd, 0, addr,
                          length, op_flags, user_data, buf_group, 0, 0, 0, 0)  # fmt: skip
        self._sq_tail = (self._sq_tail + 1) & 0xFFFFFFFF
        self._pending += 1

    @property
    def pending(self) -> int:
        """SQEs written but not yet handed to the kernel."""
        return self._pending

    def enter(self, min_complete: int, timeout_s: float | None) -> int:
        """Submit every pending SQE and wait for ``min_complete`` CQEs, at most
        ``timeout_s`` (``None``: no limit): one ``io_uring_enter(2)``. Returns the number
        submitted. An interrupted or timed-out wait is not an error (the caller reaps
        what is there)."""
        if self._disabled:
            self.register(abi.IORING_REGISTER_ENABLE_RINGS, 0, 0, "enable rings")
            self._disabled = False  # this thread is now the ring's single issuer
        to_submit = self._pending
        if to_submit:
            self._sq_tail_word[0] = self._sq_tail  # publish: see "Memory ordering"
        flags = abi.IORING_ENTER_GETEVENTS
        argp: ctypes.Array[ctypes.c_char] | None = None
        argsz = NO_ARGSZ
        if timeout_s == 0.0:
            min_complete = 0
        elif timeout_s is not None and min_complete:
            argp, timespec = self._enter_args
            whole = int(timeout_s)
            abi.TIMESPEC.pack_into(timespec, 0, whole, int((timeout_s - whole) * 1e9))
            flags |= abi.IORING_ENTER_EXT_ARG
            argsz = GETEVENTS_ARGSZ
        ret = enter_call(abi.SYS_IO_URING_ENTER, self.fd, to_submit, min_complete, flags,
                          argp, argsz)  # fmt: skip
        counts = self.counts
        counts.uring_enters += 1
        if ret < 0:
            err = ctypes.get_errno()
            # EINTR: a signal (its Python handler runs next); ETIME: the timeout passed;
            # EBUSY/EAGAIN: the CQ is over full, reaping it makes room. None submitted.
            if err in _WAIT_ENDED:
                return 0
            raise RingError(err, f"io_uring_enter: {errno.errorcode.get(err, err)} "
                                 f"({os.strerror(err)})")  # fmt: skip
        self._pending -= ret
        counts.uring_sqes += ret
        return int(ret)

    def completions(self) -> list[tuple[int, int, int]]:
        """Every CQE now in the ring, as ``(user_data, res, flags)``, oldest first; the
        ring's entries are free again when this returns."""
        head = self._cq_head_word[0]
        tail = self._cq_tail_word[0]
        count = (tail - head) & 0xFFFFFFFF
        if not count:
            return []
        start = head & self._cq_mask
        end = start + count
        cqes = self._cqes
        if end <= self.cq_entries:
            batch = list(_iter_cqes(cqes[start * 16 : end * 16]))
        else:  # the batch wraps around the end of the ring
            batch = list(_iter_cqes(cqes[start * 16 :]))
            batch += _iter_cqes(cqes[: (end - self.cq_entries) * 16])
        self._cq_head_word[0] = tail  # after the copy: the kernel may reuse them now
        self.counts.uring_cqes += count
        return batch

    def close(self) -> None:
        for view in ("_sq_tail_word", "_sq_head_word", "_cq_head_word", "_cq_tail_word",
                     "_cqes", "_sqes"):  # fmt: skip
            if hasattr(self, view):
                getattr(self, view).release()
        for mapped in self._maps:
            mapped.close()
        self._maps = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_iter_cqes = abi.CQE.iter_unpack
_WAIT_ENDED = frozenset({errno.EINTR, errno.ETIME, errno.EBUSY, errno.EAGAIN})


@functools.cache
def unavailable_reason() -> str | None:
    """Why io_uring cannot be used here, in one line, or ``None`` when it can."""
    kernel = kernel_release()
    if kernel < MIN_KERNEL:
        return f"Linux {kernel[0]}.{kernel[1]} is older than 5.15, the oldest this binding supports"
    try:
        ring = Ring(sq_entries=4, cq_entries=8)
    except (RingError, AttributeError) as exc:
        err = getattr(exc, "errno", None)
        if err == errno.ENOSYS:
            return "io_uring_setup: ENOSYS (a kernel built without io_uring, or a seccomp filter)"
        if err == errno.EPERM:
            return f"io_uring_setup: EPERM ({_disabled_detail()})"
        return str(exc)
    try:
        if not ring.capabilities.defer_taskrun and platform.machine() not in _TSO_MACHINES:
            return (
                f"{platform.machine()} is weakly ordered and this kernel lacks "
                "IORING_SETUP_DEFER_TASKRUN (6.1): Python cannot issue memory fences"
            )
        missing = _REQUIRED_OPS - ring.capabilities.ops
        if missing:
            names = ", ".join(abi.OPCODE_NAMES[op] for op in sorted(missing))
            return f"the kernel's io_uring lacks {names}"
    finally:
        ring.close()
    return None


_REQUIRED_OPS = frozenset(abi.OPCODE_NAMES)


def _disabled_detail() -> str:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            value = f.read().strip()
    except OSError:
        return "a seccomp filter or a security module refuses it"
    if value == "2":
        return "kernel.io_uring_disabled = 2"
    if value == "1":
        return "kernel.io_uring_disabled = 1 and this process is not in kernel.io_uring_group"
    return "a seccomp filter or a security module refuses it"


__all__ = ["EnterCounts", "Ring", "unavailable_reason"]
