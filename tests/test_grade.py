"""``muxlab grade``: the starter scores low, the reference solution full marks, and the
grader reaps what it starts and explains every lost point."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.assignment.handout import ANNOTATED, MARK, SOLUTION, STARTER, student_copy
from lab.demos.fdset_overflow import compiler
from lab.grade import FULL_MARKS, RUBRIC, grade
from muxlab.fdbudget import raise_fd_limit


@pytest.fixture(autouse=True)
def fd_limit() -> None:
    raise_fd_limit()


def muxlab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "muxlab", *argv], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_starter_is_the_annotated_seed_without_its_bug_marks() -> None:
    annotated = ANNOTATED.read_text(encoding="utf-8")
    starter = STARTER.read_text(encoding="utf-8")
    assert starter == student_copy(annotated)
    assert MARK not in starter and "BUG" not in starter
    assert annotated.count(MARK) >= 6


def test_rubric_weights_add_up_to_100() -> None:
    assert FULL_MARKS == 100
    assert len({c.name for c in RUBRIC}) == len(RUBRIC)


def test_starter_scores_low_with_a_reason_for_every_lost_point() -> None:
    report = grade(STARTER)
    lost = {s.criterion.name: s.reason for s in report.scores if s.points == 0}
    # The criteria the seed's bugs fail whatever the machine's timing: one recv(1024) per
    # event strands larger messages; a reset (IN|ERR|HUP) is never handled. Accepting one
    # connection per event fails accept-burst and connections-1100 only when arrivals
    # merge, which a fast, idle machine can avoid; never-reading it passes (rubric.md).
    for name in ("echo-chunking", "interleaved-200", "half-close", "reset"):
        assert name in lost, report.text()
    assert "bytes echoed" in lost["echo-chunking"]
    assert "leak" in lost["reset"]
    assert report.total <= 35, report.text()
    assert all(reason.startswith("(see muxlab demo ") for reason in lost.values())
    assert not report.full_marks


@pytest.mark.parametrize("backend", ["epoll", "poll"])
def test_reference_solution_scores_full_marks_and_exits_0(backend: str) -> None:
    # The second task is the same server on poll: graded the same way.
    proc = muxlab("grade", str(SOLUTION), "--backend", backend)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"total {FULL_MARKS}/{FULL_MARKS}".split() == proc.stdout.splitlines()[-1].split()
    for criterion in RUBRIC:
        assert f"{criterion.weight}/{criterion.weight}  ok" in proc.stdout, criterion.name


def test_starter_exits_1() -> None:
    proc = muxlab("grade", str(STARTER), "--only", "reset")
    assert proc.returncode == 1
    assert "0/15" in proc.stdout and "Traceback" not in proc.stderr


def test_a_server_that_crashes_loses_points_with_its_last_error_line(tmp_path: Path) -> None:
    crasher = tmp_path / "crash.py"
    crasher.write_text("import sys\nsys.exit('cannot bind: no such luck')\n")
    report = grade(crasher, criteria=RUBRIC[:1])
    assert report.total == 0
    assert "exited with status 1: cannot bind: no such luck" in report.scores[0].reason


def test_every_server_process_is_reaped(tmp_path: Path) -> None:
    # A server that listens and answers nothing: every check must end by its deadline,
    # and the process must be gone afterwards.
    pids = tmp_path / "pids"
    silent = tmp_path / "silent.py"
    silent.write_text(
        "import argparse, os, socket, time\n"
        "p = argparse.ArgumentParser()\n"
        "p.add_argument('--host')\n"
        "p.add_argument('--port', type=int)\n"
        "a = p.parse_args()\n"
        f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "s = socket.create_server((a.host, a.port))\n"
        "time.sleep(3600)\n"
    )
    report = grade(silent, criteria=[c for c in RUBRIC if c.name in ("accept-burst", "reset")])
    assert report.total == 0
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 2
    for pid in started:
        assert not os.path.exists(f"/proc/{pid}"), f"server {pid} was not reaped"


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["grade", "/no/such/server.py"], "no such file"), (["grade"], "required")],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], message: str) -> None:
    proc = muxlab(*argv)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_rubric_doc_lists_the_graders_criteria_and_weights() -> None:
    doc = (ANNOTATED.parent.parent / "rubric.md").read_text(encoding="utf-8")
    handouts = [(STARTER.parent / name).read_text(encoding="utf-8")
                for name in ("README.md", "README.zh-CN.md")]  # fmt: skip
    for text in (doc, *handouts):
        rows = re.findall(r"^\| `([a-z0-9-]+)` \| +(\d+) \|", text, re.M)
        assert [(c.name, c.weight) for c in RUBRIC] == [(n, int(w)) for n, w in rows]


def test_the_second_task_backend_option_reaches_the_server() -> None:
    # The starter has no --backend option: it exits 2 and the grader says so.
    proc = muxlab("grade", str(STARTER), "--backend", "poll", "--only", "reset")
    assert proc.returncode == 1
    assert "unrecognized arguments: --backend poll" in proc.stdout


@pytest.mark.skipif(compiler() is None, reason="no C compiler (cc or gcc) on PATH")
def test_the_c_reference_solution_builds_cleanly_and_scores_full_marks(tmp_path: Path) -> None:
    # What the Python solution does, with the system calls Python hides; graded as an
    # executable (not a .py file) by the same grader.
    binary = tmp_path / "echo_server"
    source = SOLUTION.with_suffix(".c")
    cc = str(compiler())
    build = [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)]
    subprocess.run(build, check=True, capture_output=True, timeout=120)
    report = grade(binary)
    assert report.full_marks, report.text()
    assert report.total == FULL_MARKS


def test_the_reference_solution_calls_no_blocking_only_api() -> None:
    # Students copy the reference: every socket in it is non-blocking, so no sendall and
    # no makefile anywhere in it (the demos are checked at run time in test_demos.py).
    tree = ast.parse(SOLUTION.read_text(encoding="utf-8"))
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert "send" in called and "recv" in called
    assert not called & {"sendall", "makefile", "settimeout"}
