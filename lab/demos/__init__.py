"""The registry of demos, by the name used on the command line (``muxlab demo NAME``).

Each demo module is a lesson a student reads on its own, top to bottom: what it runs is
shared (:mod:`lab.demos.base`: the case runner, the report, socket helpers), but its
``Setup`` and ``Counts`` records, its ``DEMO`` declaration and its naive and fixed
handlers are its own, written out in full even where two demos' look alike, so that the
wrong and the right version of one pitfall stand side by side in one file.
"""

from __future__ import annotations

from typing import Any

from lab.demos import (
    dup_fork,
    emfile,
    et_accept_once,
    et_blocking,
    et_partial_read,
    et_starvation,
    exact_event_compare,
    fdset_overflow,
    lt_vs_et,
    lt_write_spin,
    oneshot,
    select_limit,
    short_write,
    stale_event,
    thundering_herd,
    uring_syscalls,
)
from lab.demos.base import Case, Demo, DemoReport, Outcome, run_demo

# In the order a student should run them: the mechanism first, then the pitfalls.
DEMOS: dict[str, Demo[Any, Any]] = {
    demo.name: demo
    for demo in (
        lt_vs_et.DEMO,
        et_partial_read.DEMO,
        et_accept_once.DEMO,
        lt_write_spin.DEMO,
        select_limit.DEMO,
        exact_event_compare.DEMO,
        thundering_herd.DEMO,
        oneshot.DEMO,
        emfile.DEMO,
        et_blocking.DEMO,
        et_starvation.DEMO,
        short_write.DEMO,
        stale_event.DEMO,
        dup_fork.DEMO,
        fdset_overflow.DEMO,
        uring_syscalls.DEMO,
    )
}

__all__ = ["DEMOS", "Case", "Demo", "DemoReport", "Outcome", "run_demo"]
