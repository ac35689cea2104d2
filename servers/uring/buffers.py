"""Memory the kernel reads or writes outside the rings: the provided-buffer ring that
multishot receives take their buffers from, and the payload address of a ``bytes`` a send
reads from. Both stay valid only while the caller keeps them alive (until the CQE of the
request that uses them).
"""

from __future__ import annotations

import ctypes
import mmap

from servers.uring import abi
from servers.uring.ring import Ring


class BufferRing:
    """A provided-buffer ring (5.19, ``io_uring_register_buf_ring(3)``): ``count``
    buffers of ``size`` bytes the kernel picks from for each receive, so a connection
    holds no buffer while it waits. The CQE says which (``IORING_CQE_F_BUFFER``, id in
    the upper 16 bits of ``flags``); the program copies the bytes out and gives the
    buffer back by writing its entry and moving the ring's tail."""

    def __init__(self, ring: Ring, group: int, count: int, size: int) -> None:
        if count & (count - 1) or not 1 <= count <= 32768:
            raise ValueError("a buffer ring holds a power of two of buffers, at most 32768")
        self.group = group
        self.size = size
        self._mask = count - 1
        # Anonymous mappings are page-aligned, as the kernel requires of the ring; pages
        # of the buffer area are only backed by memory once a receive writes to them.
        self._entries_map = mmap.mmap(-1, count * abi.BUF_SIZE)
        self._buffers_map = mmap.mmap(-1, count * size)
        self.buffers = memoryview(self._buffers_map)
        self._entries = memoryview(self._entries_map)
        self._tail_word = self._entries[
            abi.BUF_RING_TAIL_OFFSET : abi.BUF_RING_TAIL_OFFSET + 2
        ].cast("H")
        self._entries_addr = _address_of(self._entries_map)
        self._buffers_addr = _address_of(self._buffers_map)
        reg = ctypes.create_string_buffer(abi.BUF_REG.size)
        abi.BUF_REG.pack_into(reg, 0, self._entries_addr, count, group, 0, 0, 0, 0)
        self._tail = 0
        try:
            ring.register(abi.IORING_REGISTER_PBUF_RING, ctypes.addressof(reg), 1, "pbuf ring")
        except BaseException:
            self.close()
            raise
        self._ring = ring
        for bid in range(count):
            self.give_back(bid)

    def take(self, bid: int, length: int) -> bytes:
        """The ``length`` bytes a receive put in buffer ``bid``; the buffer is returned."""
        start = bid * self.size
        data = self.buffers[start : start + length].tobytes()
        self.give_back(bid)
        return data

    def give_back(self, bid: int) -> None:
        slot = self._tail & self._mask
        abi.BUF_ENTRY.pack_into(self._entries, slot * abi.BUF_SIZE,
                                self._buffers_addr + bid * self.size, self.size, bid)  # fmt: skip
        self._tail = (self._tail + 1) & 0xFFFF
        self._tail_word[0] = (
            self._tail
        )  # after the entry: see "Memory ordering" in :mod:`servers.uring.ring`

    def close(self) -> None:
        for view in ("_tail_word", "buffers", "_entries"):
            if hasattr(self, view):
                getattr(self, view).release()
        self._entries_map.close()
        self._buffers_map.close()


def _address_of(buffer: mmap.mmap) -> int:
    """The address of a writable buffer, for the kernel; the export ends at once."""
    view = (ctypes.c_char * 1).from_buffer(buffer)
    address = ctypes.addressof(view)
    del view
    return address


def _bytes_address_by_ctypes(data: bytes) -> int:
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    return address or 0


# CPython keeps a bytes object's payload inline, at a fixed offset from the object
# (``ob_sval`` in ``PyBytesObject``, after the header and the cached hash); ``id()`` is
# the object's address. That offset is checked against ctypes once, at import: where it
# does not hold (another Python), the slower ctypes path is used.
_BYTES_OFFSET = bytes.__basicsize__ - 1
_probe_bytes = b"muxlab io_uring offset probe"


def _bytes_address_by_offset(data: bytes) -> int:
    return id(data) + _BYTES_OFFSET


bytes_address = (
    _bytes_address_by_offset
    if _bytes_address_by_offset(_probe_bytes) == _bytes_address_by_ctypes(_probe_bytes)
    else _bytes_address_by_ctypes
)
"""The address of a ``bytes`` object's payload; the caller keeps the object alive until
the kernel is done with it (its CQE arrived)."""


__all__ = ["BufferRing", "bytes_address"]
