"""Bad input is one line and exit 2; a missing optional peer is skipped with a note."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from benchmarks.experiments import PlanOverrides, apply_overrides, preset
from muxlab.cli import main
from muxlab.errors import UsageError
from muxlab.fdbudget import sweep_connection_budget
from servers import peers

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "results.json"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


def one_line_error(err: str, prefix: str = "muxlab sweep: error: ") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    return lines[0]


def test_unknown_preset(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run_cli(capsys, "sweep", "--preset", "huge", "--out-dir", str(tmp_path))
    assert status == 2
    assert "unknown preset 'huge'" in one_line_error(err)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("repeats = [", "is not valid TOML"),
        ("speed = 3", "unknown key(s) speed"),
        ('[[experiments]]\nname = "x"\nkind = "nope"\nimpls = ["poll"]', "kind 'nope'"),
        ('[[experiments]]\nname = "active"\nimpls = ["kqueue"]', "unknown implementation"),
        ('[[experiments]]\nname = "idle"\nimpls = ["poll"]\nidle = [90000]', "fd limit"),
        ('repeats = "many"', "repeats must be a number"),
    ],
)
def test_bad_toml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(text)
    status, err = run_cli(capsys, "sweep", "--config", str(plan), "--out-dir", str(tmp_path))
    assert status == 2
    assert message in one_line_error(err)


def test_bad_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run_cli(capsys, "sweep", "--experiments", "nope", "--out-dir", str(tmp_path))
    assert status == 2 and "unknown experiment(s) nope" in one_line_error(err)
    status, err = run_cli(capsys, "sweep", "--resume", "missing", "--out-dir", str(tmp_path))
    assert status == 2 and "no run 'missing'" in one_line_error(err)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--connections", "1,x"])
    assert exit_info.value.code == 2
    one_line_error(capsys.readouterr().err)


def test_missing_peers_are_skipped_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "uvloop_missing", lambda: True)
    monkeypatch.setattr(peers, "nginx_path", lambda: None)
    status = main(
        [
            "sweep",
            "--experiments",
            "peers-http",
            "--impls",
            "uvloop-protocol,nginx",
            "--out-dir",
            str(tmp_path),
            "--run-id",
            "r",
            "--no-charts",
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert status == 0, err
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["status"] for r in data["points"]] == ["skipped"] * len(data["points"])
    assert any("uvloop is not installed" in note for note in data["notes"])
    assert any("nginx is not installed" in note for note in data["notes"])
    assert "uvloop is not installed" in out  # the summary shows why


def test_presets_fit_the_descriptor_budget_and_skip_select_by_design() -> None:
    budget = sweep_connection_budget()
    for name in ("quick", "default", "full"):
        points = preset(name).points()
        assert points
        assert max(p.total_connections for p in points) <= budget, name
        over = [p for p in points if p.impl == "select" and p.total_connections > 1008]
        assert all(p.skip_reason() is not None for p in over)
        fits = [p for p in points if p.impl == "select" and p.total_connections <= 1008]
        assert fits and all(p.skip_reason() is None for p in fits)
    # full is built from the budget: its largest point is the budget itself.
    assert max(p.total_connections for p in preset("full").points()) == budget


def test_a_plan_past_the_descriptor_budget_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget comes from RLIMIT_NOFILE, read when the plan is checked."""
    hard = 2000
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (hard, hard))
    budget = sweep_connection_budget()
    assert budget < hard  # the server's own descriptors are reserved
    active = next(e for e in preset("full").experiments if e.name == "active")
    assert max(active.connections) == budget  # full's active grid ends at the budget
    with pytest.raises(UsageError, match=f"the fd limit allows {budget}"):
        apply_overrides(preset("quick"), PlanOverrides(connections=(budget + 1,)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--server-cpu", "4096"], "CPU 4096 not available here"),
        (["--client-cpus", "4095"], "CPU 4095 not available here"),
        (["--loadgen", "/nonexistent/loadgen"], "cannot run '/nonexistent/loadgen'"),
        (["--resume", "r", "--preset", "quick"], "drop --preset"),
    ],
)
def test_preconditions_are_checked_before_any_point(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    status, err = run_cli(capsys, "sweep", *argv, "--out-dir", str(tmp_path))
    assert status == 2
    assert message in one_line_error(err)
    assert not any(tmp_path.iterdir())


def test_out_dir_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    status, err = run_cli(capsys, "sweep", "--preset", "quick", "--out-dir", str(not_a_dir))
    assert status == 2
    assert "is not a directory" in one_line_error(err)
    status, err = run_cli(capsys, "plot", str(REFERENCE), "--out", f"{not_a_dir}/x")
    assert status == 2
    assert "cannot write charts" in one_line_error(err, "muxlab plot: error: ")


def test_preset_budgets_and_headline_repeats() -> None:
    from dataclasses import asdict

    from benchmarks.cli import estimate_seconds

    def budget_s(name: str) -> float:
        plan = preset(name)
        records = [
            {"spec": asdict(p), "repeats_wanted": plan.repeats_of(p), "repeats_valid": 0}
            for p in plan.points()
            if p.skip_reason() is None
        ]
        return estimate_seconds(plan, records)

    assert budget_s("quick") <= 120
    assert budget_s("default") <= 15 * 60
    default = preset("default")
    experiments = {e.name: e for e in default.experiments}
    idle = [p for p in experiments["idle"].points() if p.idle in (0, 10000)]
    peers = [p for p in experiments["peers"].points() if p.connections in (100, 1000)]
    headline = [p for p in idle + peers if p.skip_reason() is None]
    backends = len(experiments["idle"].impls)
    # select has no 10,000-idle point: it is past FD_SETSIZE
    assert len(headline) == 2 * backends - 1 + 2 * len(experiments["peers"].impls)
    assert {default.repeats_of(p) for p in headline} == {5}
