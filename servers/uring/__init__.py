"""A small io_uring binding over the kernel ABI: :mod:`.abi` (constants and struct
layouts) and :mod:`.ring` (setup, SQEs, ``io_uring_enter``, CQEs, provided buffers)."""
