"""The io_uring kernel ABI: system call numbers, constants and struct layouts.

Everything here is copied from ``include/uapi/linux/io_uring.h`` (the values are part of
the kernel's stable ABI and never change once released); the kernel version that added
each one is noted where the binding depends on it. Man pages: ``io_uring(7)``,
``io_uring_setup(2)``, ``io_uring_enter(2)``, ``io_uring_register(2)``.

Layouts are ``struct`` format strings, not ``ctypes.Structure`` classes: the hot path
packs a whole SQE and unpacks a batch of CQEs with one ``struct`` call each, which is
the cheapest way CPython has to move 64 bytes into shared memory.
"""

from __future__ import annotations

import struct

# The io_uring system calls have the same numbers on every architecture that uses the
# generic syscall table (x86-64, arm64, riscv64, ...): they were added in 5.1, after the
# tables were unified (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h).
SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
SYS_IO_URING_REGISTER = 427

# mmap offsets of the three regions (io_uring_setup(2), "mmap").
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000

# io_uring_params.flags
IORING_SETUP_CQSIZE = 1 << 3
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_R_DISABLED = 1 << 6  # 5.10: rings start disabled until ENABLE_RINGS
IORING_SETUP_COOP_TASKRUN = 1 << 8  # 5.19
IORING_SETUP_SINGLE_ISSUER = 1 << 12  # 6.0
IORING_SETUP_DEFER_TASKRUN = 1 << 13  # 6.1, needs SINGLE_ISSUER

# io_uring_params.features
IORING_FEAT_SINGLE_MMAP = 1 << 0  # 5.4: SQ and CQ rings share one mapping
IORING_FEAT_NODROP = 1 << 1  # 5.5: a full CQ overflows to a kernel list, no CQE is lost
IORING_FEAT_SUBMIT_STABLE = 1 << 2  # 5.5: the kernel copied the SQE once submit returns
IORING_FEAT_FAST_POLL = 1 << 5  # 5.7: a socket op that would block is armed on poll
IORING_FEAT_EXT_ARG = 1 << 8  # 5.11

# io_uring_enter(2) flags
IORING_ENTER_GETEVENTS = 1 << 0
IORING_ENTER_EXT_ARG = 1 << 3  # 5.11: argp is a struct io_uring_getevents_arg (timeout)

# Opcodes (enum io_uring_op). All of these are in 5.6 except where noted.
IORING_OP_NOP = 0
IORING_OP_POLL_ADD = 6
IORING_OP_POLL_REMOVE = 7
IORING_OP_ACCEPT = 13
IORING_OP_ASYNC_CANCEL = 14
IORING_OP_SEND = 26
IORING_OP_RECV = 27
OPCODE_NAMES = {
    IORING_OP_NOP: "NOP",
    IORING_OP_POLL_ADD: "POLL_ADD",
    IORING_OP_POLL_REMOVE: "POLL_REMOVE",
    IORING_OP_ACCEPT: "ACCEPT",
    IORING_OP_ASYNC_CANCEL: "ASYNC_CANCEL",
    IORING_OP_SEND: "SEND",
    IORING_OP_RECV: "RECV",
}

# sqe.flags
IOSQE_BUFFER_SELECT = 1 << 5  # 5.7: take the buffer from a provided-buffer group

# POLL_ADD / POLL_REMOVE flags, in sqe.len
IORING_POLL_ADD_MULTI = 1 << 0  # 5.13: stays armed, one CQE per wake-up, F_MORE set
IORING_POLL_UPDATE_EVENTS = 1 << 1  # 5.13: POLL_REMOVE that changes the mask instead

# sqe.ioprio for RECV
IORING_RECV_MULTISHOT = 1 << 1  # 6.0, needs IOSQE_BUFFER_SELECT

# cqe.flags
IORING_CQE_F_BUFFER = 1 << 0  # the upper 16 bits are the provided buffer's id
IORING_CQE_F_MORE = 1 << 1  # a multishot request stays armed: more CQEs will come
IORING_CQE_F_SOCK_NONEMPTY = 1 << 2  # 5.19: the socket has more to receive or accept
IORING_CQE_BUFFER_SHIFT = 16

# io_uring_register(2) opcodes
IORING_REGISTER_PROBE = 8  # 5.6
IORING_REGISTER_ENABLE_RINGS = 12  # 5.10
IORING_REGISTER_PBUF_RING = 22  # 5.19
IORING_UNREGISTER_PBUF_RING = 23

IO_URING_OP_SUPPORTED = 1 << 0

# struct io_uring_params: 10 u32 fields (sq_entries .. resv[3]), then
# struct io_sqring_offsets (head, tail, ring_mask, ring_entries, flags, dropped, array,
# resv1: u32; user_addr: u64) and struct io_cqring_offsets (head, tail, ring_mask,
# ring_entries, overflow, cqes, flags, resv1: u32; user_addr: u64). 120 bytes.
PARAMS = struct.Struct("=10I 8I Q 8I Q")
assert PARAMS.size == 120
PARAMS_FLAGS_INDEX = 2
PARAMS_FEATURES_INDEX = 5
SQ_OFF_INDEX = 10  # head, tail, ring_mask, ring_entries, flags, dropped, array
CQ_OFF_INDEX = 19  # head, tail, ring_mask, ring_entries, overflow, cqes, flags

# struct io_uring_sqe, 64 bytes: opcode u8, flags u8, ioprio u16, fd s32, off u64,
# addr u64, len u32, op_flags u32 (poll32_events, msg_flags, accept_flags, ...),
# user_data u64, buf_index/buf_group u16, personality u16, file_index s32, addr3 u64,
# __pad2 u64.
SQE = struct.Struct("=BBHiQQIIQHHiQQ")
assert SQE.size == 64

# struct io_uring_cqe, 16 bytes: user_data u64, res s32, flags u32.
CQE = struct.Struct("=QiI")
assert CQE.size == 16

# struct io_uring_probe (16 bytes: last_op u8, ops_len u8, resv u16, resv2 u32[3]), then
# ops_len struct io_uring_probe_op (8 bytes: op u8, resv u8, flags u16, resv2 u32).
PROBE_HEADER = struct.Struct("=BBH3I")
PROBE_OP = struct.Struct("=BBHI")
PROBE_OPS = 256

# struct io_uring_buf_reg, 40 bytes: ring_addr u64, ring_entries u32, bgid u16, flags u16,
# resv u64[3].
BUF_REG = struct.Struct("=QIHH3Q")
# struct io_uring_buf, 16 bytes: addr u64, len u32, bid u16, resv u16. The ring's tail
# is the ``resv`` field of entry 0 (struct io_uring_buf_ring), a u16 at byte 14, so an
# entry is written as its first 14 bytes only: writing all 16 would zero the tail.
BUF_ENTRY = struct.Struct("=QIH")
BUF_SIZE = 16
BUF_RING_TAIL_OFFSET = 14

# struct io_uring_getevents_arg, 24 bytes: sigmask u64, sigmask_sz u32, min_wait_usec
# u32 (6.12; padding before), ts u64 (a pointer to struct __kernel_timespec: s64 sec,
# s64 nsec).
GETEVENTS_ARG = struct.Struct("=QIIQ")
TIMESPEC = struct.Struct("=qq")
