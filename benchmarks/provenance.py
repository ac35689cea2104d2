"""What a sweep's numbers depend on, recorded once per run and checked on ``--resume``.

Repeats measured by two different builds, kernels or machines are two samples of two
different things; a resumed run that mixed them would report one median of both. The
fields in :data:`RESUME_KEYS` must be equal for ``--resume`` to go on without ``--force``.
The pinning and the plan come from the results file itself, so they cannot differ.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

from muxlab.environment import environment
from muxlab.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
# Compared on --resume: what changes the measured code or the machine under it.
RESUME_KEYS = (
    "git_commit",
    "git_dirty",
    "git_diff_sha256",
    "muxlab_version",
    "kernel",
    "cpu_model",
    "python",
    "fd_limit_soft",
    "fd_limit_hard",
)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> dict[str, Any]:
    """The checkout's commit, whether tracked files differ from it, and a hash of how.

    Two dirty runs at the same commit are the same code only if their diffs are equal,
    hence the hash (SHA-256 of ``git diff HEAD``; untracked files are not code we run).
    """
    commit = _git("rev-parse", "HEAD")
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary")
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": None if diff is None else bool(diff),
        "git_diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None,
    }


def provenance(
    server_cpu: int | None = None, client_cpus: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Everything :data:`RESUME_KEYS` names, plus the pinning when given."""
    env = environment()
    record: dict[str, Any] = {
        **git_state(),
        "muxlab_version": env["packages"].get("muxlab"),
        "kernel": env["kernel"],
        "cpu_model": env["cpu_model"],
        "python": env["python"],
        "fd_limit_soft": env["fd_limit_soft"],
        "fd_limit_hard": env["fd_limit_hard"],
    }
    if server_cpu is not None:
        record["server_cpu"] = server_cpu
        record["client_cpus"] = list(client_cpus or ())
    return record


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: stored -> current`` for every resume key that differs."""
    return [
        f"{key} {short(stored.get(key))} -> {short(current.get(key))}"
        for key in RESUME_KEYS
        if stored.get(key) != current.get(key)
    ]


def short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 40 or len(text) == 64 else text  # commit, sha256


def check_resume(data: dict[str, Any], current: dict[str, Any], *, force: bool) -> None:
    """Refuse, in one line, to resume a run measured from another commit or environment."""
    stored = data.get("provenance")
    if not stored:
        if not force:
            raise UsageError(
                f"run {data['run_id']!r} has no provenance record (older muxlab); "
                "resume it anyway with --force"
            )
        return
    changed = differences(stored, current)
    if changed and not force:
        raise UsageError(
            f"run {data['run_id']!r} was measured elsewhere: {'; '.join(changed)}; "
            "resume anyway with --force"
        )
