"""A small io_uring binding over the kernel ABI: :mod:`.abi` (constants and struct
layouts), :mod:`.syscalls` (the system calls, and what the running kernel offers),
:mod:`.ring` (one ring: setup, SQEs, ``io_uring_enter``, CQEs) and :mod:`.buffers`
(provided-buffer rings, payload addresses)."""
