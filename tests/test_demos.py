"""Every demo reproduces its pitfall, and would say so if the naive handler were fixed."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.demos import DEMOS, Demo, run_demo
from muxlab.cli import main
from tests.nonblocking_guard import blocking_calls_on_nonblocking_sockets

DEMO_PARAMS = [
    pytest.param(
        demo,
        id=name,
        marks=pytest.mark.skipif(demo.unavailable() is not None, reason=str(demo.unavailable())),
    )
    for name, demo in DEMOS.items()
]


@pytest.mark.parametrize("demo", DEMO_PARAMS)
def test_demo_reproduces(demo: Demo[Any, Any]) -> None:
    report = run_demo(demo)
    assert report.reproduced, report.text
    assert report.exit_status == 0
    naive, *others = report.outcomes
    assert naive.role == "naive" and naive.shows_bug
    # Compared cases (shown, not deciding) come last, after the fixed ones.
    fixed = others[: len(demo.fixed)]
    assert fixed and all(o.role == "fixed" and not o.shows_bug for o in fixed)
    assert [o.role for o in others[len(fixed) :]] == ["compared"] * len(demo.compared)
    assert "see: " + demo.man.split(",")[0] in report.text and "observed:" in report.text


@pytest.mark.parametrize("demo", DEMO_PARAMS)
def test_fixed_handler_in_the_naive_slot_is_not_a_reproduction(demo: Demo[Any, Any]) -> None:
    # The bug check must depend on the handler: with the first fix swapped in for the
    # naive handler, the naive-failure check fails and the demo exits 1.
    swapped = dataclasses.replace(demo, naive=demo.fixed[0])
    report = run_demo(swapped)
    assert not report.outcomes[0].shows_bug, report.text
    assert not report.reproduced
    assert report.exit_status == 1
    assert "NOT reproduced" in report.text


def test_list_names_every_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(DEMOS)


def test_cli_runs_a_demo_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "demo", "lt-vs-et"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "result: reproduced" in proc.stdout
    assert "epoll(7)" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["demo"], "name a demo"), (["demo", "no-such-demo"], "invalid choice")],
)
def test_bad_input_is_one_line(argv: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("muxlab demo: error: ")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_lab_guides_cover_every_demo_and_stay_in_step() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs"
    english = (docs / "lab-guide.md").read_text(encoding="utf-8")
    chinese = (docs / "lab-guide.zh-CN.md").read_text(encoding="utf-8")
    for name in DEMOS:
        assert f"muxlab demo {name}\n" in english, name
    # Same sections, same commands, same numbered questions.
    for pattern in (r"^#+ ([\d.]+)", r"```sh\n(.*?)```", r"^ ?(\d+)\. "):
        flags = re.M | re.S
        assert re.findall(pattern, english, flags) == re.findall(pattern, chinese, flags)


@pytest.mark.parametrize("demo", DEMO_PARAMS)
def test_demo_calls_no_blocking_only_api_on_a_non_blocking_socket(
    demo: Demo[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with blocking_calls_on_nonblocking_sockets(monkeypatch) as offences:
        run_demo(demo)
    assert offences == []


def test_the_guard_catches_sendall_on_a_non_blocking_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    left, right = socket.socketpair()
    with left, right, blocking_calls_on_nonblocking_sockets(monkeypatch) as offences:
        left.sendall(b"blocking: allowed")
        left.setblocking(False)
        left.sendall(b"non-blocking: an offence")
        assert right.recv(100) == b"blocking: allowednon-blocking: an offence"
    assert len(offences) == 1 and offences[0].startswith("sendall at ")


def test_a_demo_that_cannot_run_here_says_why_in_one_line(tmp_path: Path) -> None:
    # No C compiler on PATH: the C companion refuses with its reason, exit 1.
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "demo", "fdset-overflow"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "muxlab demo: error: fdset-overflow cannot run here: no C compiler (cc or gcc) on "
        "PATH; install gcc\n"
    )
