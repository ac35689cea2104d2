#!/usr/bin/env bash
# The C20K evidence in results/c20k/README.md: `sudo results/c20k/run.sh [OUT_DIR]` from the
# repository root. Every run is in a private network namespace (unshare -n, so root), where
# the TCP counters count only these runs and net.core.somaxconn can be set without touching
# the machine's own. Per server, interleaved: the load generator before this work (BASE,
# exported with git archive, never checked out here) against this tree with somaxconn 4096,
# then this tree with somaxconn 65535. About 15 minutes on 2 CPUs.
set -euo pipefail
root=$(pwd)
out=${1:-$root/results/c20k/runs}
base=${BASE:-34fb783}
servers=${SERVERS:-poll epoll-lt epoll-et io_uring-poll io_uring nginx}
python=$root/.venv/bin/python
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git archive "$base" | tar -x -C "$scratch"
cp benchmarks/hold.py "$scratch/benchmarks/"
# 10 active + 19,926 idle connections (the full preset's idle top point), HTTP, server on
# CPU 0 and one load-generator process on CPU 1, ramped at 5000/s as the sweep does.
hold=(-m benchmarks.hold --connections 10 --idle 19926 --duration 4 --connect-rate 5000
      --server-cpu 0 --client-cpus 1)
unshare -n bash -s "$out" "$scratch" "$root" "$python" "$servers" "${hold[@]}" <<'INNER'
set -euo pipefail
out=$1 base=$2 root=$3 python=$4 servers=$5; shift 5
ip link set lo up
ulimit -n 20000
for s in $servers; do
  for variant in before after-4096 after-65535; do
    dir=$root; [ "$variant" = before ] && dir=$base
    somaxconn=4096; [ "$variant" = after-65535 ] && somaxconn=65535
    sysctl -qw net.core.somaxconn=$somaxconn
    echo "== $variant $s somaxconn=$somaxconn $(date -u +%T)"
    (cd "$dir" && "$python" "$@" --servers "$s" --json "$out/$variant-$s.json") || true
  done
done
INNER
