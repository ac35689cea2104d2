"""The registry of demos, by the name used on the command line (``muxlab demo NAME``)."""

from __future__ import annotations

from typing import Any

from lab.demos import (
    emfile,
    et_accept_once,
    et_partial_read,
    exact_event_compare,
    lt_vs_et,
    lt_write_spin,
    oneshot,
    select_limit,
    thundering_herd,
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
    )
}

__all__ = ["DEMOS", "Case", "Demo", "DemoReport", "Outcome", "run_demo"]
