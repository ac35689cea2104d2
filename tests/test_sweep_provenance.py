"""Where a run came from is recorded, checked on --resume, and nothing escapes --out-dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.experiments import ExperimentSpec, SweepPlan
from benchmarks.provenance import RESUME_KEYS, provenance
from benchmarks.results import ResultsFile
from muxlab.cli import main


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("muxlab sweep: error: "), err
    return lines[0]


def stored_run(tmp_path: Path, **changed: object) -> Path:
    """A results file with no repeat measured yet, recorded with some provenance changed."""
    plan = SweepPlan((ExperimentSpec("active", "active", ("epoll-lt",)),), 1, 0.2, 0.1)
    record = provenance(0, (1,)) | changed
    results = ResultsFile.create(
        tmp_path / "runs" / "r",
        "r",
        plan,
        ["muxlab", "sweep"],
        {},
        {"server_cpu": 0, "client_cpus": [1], "loadgen": ["true"]},
        [],
        record,
    )
    return results.run_dir


def test_provenance_records_what_resume_compares() -> None:
    record = provenance(0, (1,))
    assert set(RESUME_KEYS) <= set(record)
    assert len(record["git_commit"]) == 40
    assert isinstance(record["git_dirty"], bool)
    assert (record["git_diff_sha256"] is None) == (not record["git_dirty"])
    assert record["fd_limit_hard"] > 0 and record["cpu_model"] and record["muxlab_version"]
    assert (record["server_cpu"], record["client_cpus"]) == (0, [1])


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ({"git_commit": "0" * 40}, "git_commit 000000000000 -> "),
        ({"kernel": "2.6.32"}, "kernel 2.6.32 -> "),
        ({"python": "3.0.0", "fd_limit_hard": 1024}, "python 3.0.0 -> "),
    ],
)
def test_resume_refuses_another_commit_or_environment_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changed: dict[str, object], message: str
) -> None:
    run_dir = stored_run(tmp_path, **changed)
    before = (run_dir / "results.json").read_bytes()
    status = main(["sweep", "--resume", str(run_dir), "--quiet", "--no-charts"])
    line = one_line_error(capsys.readouterr().err)
    assert status == 2
    assert "measured elsewhere" in line and message in line and "--force" in line
    if "fd_limit_hard" in changed:
        assert "fd_limit_hard 1024 -> " in line  # every difference, in the same line
    assert (run_dir / "results.json").read_bytes() == before


def test_resume_with_force_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = stored_run(tmp_path, kernel="2.6.32")
    # The stored load generator is `true`: it runs and reports nothing, so the only point
    # fails; what matters here is that --force got past the provenance check to measure.
    status = main(["sweep", "--resume", str(run_dir), "--force", "--quiet", "--no-charts"])
    _, err = capsys.readouterr()
    assert status == 3, err
    data = json.loads((run_dir / "results.json").read_text())
    assert len(data["resumed"]) == 1
    assert data["points"][0]["status"] == "failed"


@pytest.mark.parametrize("run_id", ["../x", "/abs", "a/b", ".hidden", "..", "x y", ""])
def test_run_id_must_be_one_safe_path_component(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    status = main(["sweep", "--preset", "quick", "--out-dir", str(out), "--run-id", run_id])
    line = one_line_error(capsys.readouterr().err)
    assert status == 2
    assert "must be one path component" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]  # nothing written anywhere


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".x"])
def test_toml_experiment_name_must_be_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[experiments]]\nname = "{name}"\nkind = "active"\nimpls = ["poll"]\n')
    status = main(["sweep", "--config", str(plan), "--out-dir", str(tmp_path / "out")])
    line = one_line_error(capsys.readouterr().err)
    assert status == 2 and f"experiment name {name!r} must be one path component" in line
    assert not (tmp_path / "out").exists()


def test_resume_run_id_that_is_not_a_directory_must_be_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["sweep", "--resume", "../elsewhere", "--out-dir", str(tmp_path)])
    assert status == 2
    assert "must be one path component" in one_line_error(capsys.readouterr().err)


def test_server_cpu_that_is_a_client_cpu_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = min(os.sched_getaffinity(0))
    shared = ["sweep", "--server-cpu", str(cpu), "--client-cpus", str(cpu), "--out-dir"]
    status = main([*shared, str(tmp_path)])
    assert status == 2
    assert f"server CPU {cpu} is also a client CPU" in one_line_error(capsys.readouterr().err)
    # With --force the CPU check passes, and the next precondition is the one that stops it.
    status = main([*shared, str(tmp_path), "--force", "--loadgen", "/nonexistent/loadgen"])
    assert status == 2
    assert "cannot run '/nonexistent/loadgen'" in one_line_error(capsys.readouterr().err)
    assert not any(tmp_path.iterdir())


def test_resume_refuses_a_schema_1_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = stored_run(tmp_path)
    data = json.loads((run_dir / "results.json").read_text())
    data["schema_version"] = 1
    (run_dir / "results.json").write_text(json.dumps(data))
    status = main(["sweep", "--resume", str(run_dir), "--force"])
    assert status == 2
    assert "written by an older muxlab" in one_line_error(capsys.readouterr().err)
