"""Servers listen with backlog ``net.core.somaxconn``, read at start (issue 12, C20K: a
4096-connection accept queue overflowed during 20,000-connection ramps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# In a private network namespace (its own somaxconn), start a server with the default
# backlog and print the bound of its listener's accept queue: ss's Send-Q.
NETNS_SCRIPT = """
import subprocess, sys
from servers.process import ServerProcess
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/core/somaxconn", "w") as f:
    f.write(sys.argv[1])
with ServerProcess("epoll-lt") as server:
    ss = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True,
                        text=True, check=True).stdout.split()
    print(ss[2])
"""


@pytest.mark.parametrize("somaxconn", [1000, 5000])
def test_default_backlog_is_somaxconn_read_at_start(somaxconn: int) -> None:
    tools = ("unshare", "ip", "ss")
    if os.geteuid() != 0 or any(shutil.which(t) is None for t in tools):
        pytest.skip("needs root, unshare, ip and ss for a private network namespace")
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", NETNS_SCRIPT, str(somaxconn)],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(somaxconn)]
