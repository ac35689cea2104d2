#!/usr/bin/env bash
# The C50K figures in results/c50k/README.md: `sudo results/c50k/run.sh [OUT_JSON]` from the
# repository root. In a private network namespace (unshare -n, so root): its TCP counters
# count only this run, and net.core.somaxconn is set there without touching the machine's.
# Every backend that can hold 50,000 connections plus nginx, one after another, each
# ramped and held for 60 s (python -m benchmarks.c50k; about 12 minutes on 2 CPUs).
set -euo pipefail
root=$(pwd)
out=${1:-$root/results/c50k/c50k.json}
python=$root/.venv/bin/python
unshare -n bash -s "$root" "$python" "$out" <<'INNER'
set -euo pipefail
root=$1 python=$2 out=$3
ip link set lo up
ulimit -n 20000
sysctl -qw net.core.somaxconn=65535
cd "$root"
"$python" -m benchmarks.c50k --json "$out"
INNER
