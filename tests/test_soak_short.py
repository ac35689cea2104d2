"""A short soak in the default run: hostile clients next to normal ones, every backend.

The long one, with the latency table, is ``benchmarks/test_soak.py``. Here only what must
hold whatever the machine: the server survives, leaks no descriptor, and the normal
clients see no error. No timing is asserted.
"""

from __future__ import annotations

from benchmarks.hostile import soak


def test_short_soak_no_crash_no_fd_leak_no_normal_errors(backend: str) -> None:
    result = soak(backend, duration_s=10, rate=500, hostile=True, connections=10)
    assert not result.crashed
    assert result.fd_leak == 0
    assert result.normal_errors == {}
    assert result.normal_requests > 0
    assert result.hostile_ops.get("connect_close", 0) > 0  # the hostile clients did run
    assert result.server_errors.get("over_max_connections", 0) > 0  # the burst met the cap
