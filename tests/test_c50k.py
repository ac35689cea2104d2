"""The C50K preset (issue 12, item 3): its plan from the descriptor limit and the registry's
ceilings, and the same code path as the 50,000-connection run at a small scale."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import c50k
from benchmarks.c50k_cli import C50kSpec
from servers import registry
from servers.registry import Style
from tests.conftest import require_tool

CONNECTIONS = 300
ACTIVE = 6


def c50k_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.c50k", *extra]


@pytest.fixture
def limit_20000(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan as on a machine with RLIMIT_NOFILE 20,000 and the default port range."""
    monkeypatch.setattr(c50k, "fd_limits", lambda: (20000, 20000))
    monkeypatch.setattr(c50k, "read_sysctl", lambda name: "32768\t60999")


@pytest.mark.usefixtures("limit_20000")
def test_plan_fits_50000_into_20000_descriptor_processes() -> None:
    plan = c50k.make_plan(C50kSpec(servers=("epoll-lt", "nginx")))
    # Load: ceil(50,000 / (20,000 - 32)) = 3 processes of 16,667 each; 28,232 ports per
    # address pair, a quarter of them per source: ceil(50,000 / 7,058) = 8 sources.
    assert (plan.load_processes, plan.per_load_process, plan.source_addresses) == (3, 16667, 8)
    # Server: 50,000 x 1.25 (reuseport margin) / (20,000 - 32) -> 4 workers each.
    assert [(p.server, p.workers, p.per_worker_budget, p.refused) for p in plan.servers] == [
        ("epoll-lt", 4, 19968, None),
        ("nginx", 4, 19968, None),
    ]


@pytest.mark.usefixtures("limit_20000")
def test_select_is_refused_from_its_registry_ceiling() -> None:
    (select,) = c50k.make_plan(C50kSpec(servers=("select", "epoll-et"))).servers[:1]
    assert select.refused is not None
    assert select.per_worker_budget == 1024 - 16  # FD_SETSIZE minus SELECT_RESERVE
    assert "FD_SETSIZE" in select.refused and "need 63 workers" in select.refused


@pytest.mark.usefixtures("limit_20000")
def test_a_ceiling_is_read_from_the_registry_not_from_a_name() -> None:
    # select's entry under another name, with a ceiling of 16,384: 4 workers of 16,368.
    entry = replace(
        registry.get("select"), name="ceiling-16k", fd_ceiling=16384, style=Style("#123456", "o")
    )
    with registry.registered(entry):
        (plan,) = c50k.make_plan(C50kSpec(servers=("ceiling-16k",))).servers
    assert (plan.workers, plan.per_worker_budget, plan.refused) == (4, 16384 - 16, None)


def test_a_plan_that_does_not_fit_the_limit_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "c50k.json"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    proc = subprocess.run(
        c50k_argv("--servers", "epoll-lt", "--json", str(out)),
        capture_output=True, text=True, timeout=60, preexec_fn=low_limit,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("c50k: error: 50,000 conn")
    assert "RLIMIT_NOFILE 1,024" in proc.stderr
    assert proc.stdout == "" and not out.exists()


@pytest.mark.parametrize("server", ["epoll-lt", "nginx"])
def test_small_c50k_holds_every_connection_over_two_workers(server: str, tmp_path: Path) -> None:
    require_tool("ss")
    reason = registry.get(server).unavailable_reason("http")
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "c50k.json"
    proc = subprocess.run(
        c50k_argv("--servers", server, "--connections", str(CONNECTIONS), "--active",
                  str(ACTIVE), "--duration", "1", "--workers", "2", "--load-processes", "2",
                  "--json", str(out)),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["plan"]["load_processes"] == 2
    assert data["plan"]["per_load_process"] == CONNECTIONS // 2
    (held,) = data["outcomes"]
    assert held["server"] == server
    assert (held["connections_opened"], held["connections_held_at_end"]) == (CONNECTIONS,) * 2
    assert (held["errors"], held["connect_errors"], held["load_exit_status"]) == ({}, 0, 0)
    workers = held["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2
    # SO_REUSEPORT spread them: each worker holds some, and together exactly all.
    assert all(w["connections"] > 0 for w in workers)
    assert sum(w["connections"] for w in workers) == CONNECTIONS
    assert all(w["rss_held_kib"] > 0 and w["rss_before_kib"] > 0 for w in workers)
    growth = sum(w["rss_held_kib"] - w["rss_before_kib"] for w in workers)
    assert held["workers_rss_growth_per_connection_bytes"] == round(growth * 1024 / CONNECTIONS, 1)
    assert held["c50k"] == {"held_all": True, "no_errors": True, "workers_sum_to_total": True}
