"""CPU accounting and placement, for the servers, the load generator and the benchmarks.

Three ways to learn CPU time, each for a case the others cannot cover:

- ``getrusage(RUSAGE_SELF)`` (``getrusage(2)``): a process's own user and system time
  and peak RSS; what a server puts in its counters line, so a harness can compute CPU
  per request between two snapshots without stopping it.
- ``getrusage(RUSAGE_CHILDREN)``: the time of children already waited for, e.g. a
  ``wrk`` run to completion.
- ``/proc/PID/stat`` (``proc(5)``): any running process, e.g. nginx's worker, which
  prints no counters. Fields 14 and 15 (utime, stime) are in clock ticks
  (``sysconf(_SC_CLK_TCK)``), so their resolution is 10 ms at the usual 100 Hz.

Pinning (``sched_setaffinity(2)``) keeps a server and its load generator off each
other's CPUs, so one does not steal the other's cycles during a measurement.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from muxlab.errors import UsageError

# /proc/PID/stat fields after the command name (which may hold spaces and parentheses,
# so the line is split after its last ')'): field 4 (ppid) is index 1, fields 14 and 15
# (utime, stime) are indices 11 and 12 (proc(5), numbered from 1).
_PPID = 1
_UTIME = 11
_STIME = 12


@dataclass(frozen=True)
class CpuTimes:
    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s


@dataclass(frozen=True)
class SelfUsage:
    """This process's CPU time so far and its peak resident set (``getrusage(2)``)."""

    user_s: float
    system_s: float
    max_rss_kib: int  # ru_maxrss is in KiB on Linux


def self_usage() -> SelfUsage:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return SelfUsage(usage.ru_utime, usage.ru_stime, usage.ru_maxrss)


def children_cpu_s() -> float:
    """User + system time of the children this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: index 0 is field 3 (state) of ``proc(5)``.
    Raises OSError (FileNotFoundError) once the process is gone."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def process_cpu_times(pid: int) -> CpuTimes:
    """User and system CPU time of a running process so far (``proc(5)``)."""
    fields = proc_stat_fields(pid)
    ticks = os.sysconf("SC_CLK_TCK")
    return CpuTimes(int(fields[_UTIME]) / ticks, int(fields[_STIME]) / ticks)


def parent_pid(pid: int) -> int:
    return int(proc_stat_fields(pid)[_PPID])


def pin_to_cpu(cpu: int) -> None:
    """Run this process (and the children it starts later) on ``cpu`` only."""
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot pin to CPU {cpu}: {exc}") from None
