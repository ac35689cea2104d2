#!/usr/bin/env bash
# A lab of hosts on one machine: network namespaces for one server host and two client
# hosts on a bridge, a Dask scheduler on the server host and one Dask worker on each client
# host, so that `muxlab load --cluster` can be tried (and tested) without a second machine.
#
#   scripts/netns-lab.sh up   [--name LAB] [--delay MS] [--server-worker]
#                                                         create, start (idempotent)
#   scripts/netns-lab.sh down [--name LAB]                stop, remove (idempotent)
#
# Layout (LAB defaults to "mxl"; a distinct --name lets several labs run side by side):
#   namespace LAB-br   the bridge br0 and one veth end per host (no address: a switch)
#   namespace LAB-srv  198.18.0.1/24, the Dask scheduler on tcp://198.18.0.1:8786
#   namespace LAB-c1   198.18.0.2/24, Dask worker "client1"
#   namespace LAB-c2   198.18.0.3/24, Dask worker "client2"
# --server-worker adds a Dask worker "server" in LAB-srv, so that `muxlab sweep --cluster
# tcp://198.18.0.1:8786 --server-host server` starts each point's server there, through
# Dask (a `muxlab load --cluster` on that lab would send load from it too).
# 198.18.0.0/15 is the block RFC 2544 sets aside for benchmarks: it clashes with nothing,
# and nothing here has a route out, so all traffic stays inside these namespaces (the
# bridge is in its own namespace, not the root one). Run the server and `muxlab load` in
# LAB-srv:  ip netns exec LAB-srv muxlab serve --host 198.18.0.1 --port 7000 &
#           ip netns exec LAB-srv muxlab load --host 198.18.0.1 --port 7000 \
#               --cluster tcp://198.18.0.1:8786
# --delay MS adds that one-way delay on every host's link (tc-netem(8)), to emulate a LAN;
# it needs the kernel's sch_netem module.
#
# Workers run without a Nanny (--no-nanny): a Nanny's worker is a daemonic process, which
# may not start the load generator's processes, and a killed worker must stay dead, as a
# lost host would. Pid files and logs are in $MUXLAB_NETNS_STATE (default /tmp)/muxlab-netns-LAB;
# `down` stops the pids in them, then every process left in the lab's namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/netns-lab.sh up|down [--name LAB] [--delay MS] [--server-worker]" >&2
  exit 2
}

die() {
  echo "netns-lab: $*" >&2
  exit 1
}

[ $# -ge 1 ] || usage
action=$1
shift
lab=mxl
delay_ms=
server_worker=-
while [ $# -gt 0 ]; do
  case $1 in
    --name) [ $# -ge 2 ] || usage; lab=$2; shift 2 ;;
    --delay) [ $# -ge 2 ] || usage; delay_ms=$2; shift 2 ;;
    --server-worker) server_worker=server; shift ;;
    *) usage ;;
  esac
done
case $action in up|down) ;; *) usage ;; esac
# Interface names are at most 15 bytes (IFNAMSIZ 16, with the NUL): LAB plus a 4-byte suffix.
[[ $lab =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "--name must be 1-10 lowercase letters/digits, not '$lab'"
[[ -z $delay_ms || $delay_ms =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--delay must be milliseconds, not '$delay_ms'"
[ "$(id -u)" = 0 ] || die "must run as root (ip netns)"

python=${MUXLAB_PYTHON:-$PWD/.venv/bin/python}
state=${MUXLAB_NETNS_STATE:-/tmp}/muxlab-netns-$lab
bridge_ns=$lab-br
server_ns=$lab-srv
scheduler=tcp://198.18.0.1:8786
# host namespace, its address, its Dask worker name (none for the server host)
hosts=("$server_ns 198.18.0.1 $server_worker" "$lab-c1 198.18.0.2 client1" "$lab-c2 198.18.0.3 client2")

ns_exists() { [ -e "/run/netns/$1" ]; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

make_host() {
  local ns=$1 addr=$2 index=$3
  local outside=${lab}h${index}b inside=${lab}h${index}
  ns_exists "$ns" || ip netns add "$ns"
  ip -n "$ns" link set lo up
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip -n "$bridge_ns" link add name "$outside" type veth peer name "$inside"
    ip -n "$bridge_ns" link set "$inside" netns "$ns"
    ip -n "$ns" link set "$inside" name eth0
    ip -n "$bridge_ns" link set "$outside" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
  fi
  ip -n "$ns" link set eth0 up
  if [ -n "$delay_ms" ]; then
    ip netns exec "$ns" tc qdisc replace dev eth0 root netem delay "${delay_ms}ms" ||
      die "tc netem failed in $ns: is the sch_netem kernel module available?"
  fi
}

start() {
  local name=$1 ns=$2
  shift 2
  alive "$state/$name.pid" && return 0
  # No fd of ours stays open in the daemon, so a caller reading our output sees its end.
  ip netns exec "$ns" "$python" "$@" >"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}

up() {
  "$python" -c "import distributed" 2>/dev/null ||
    die "$python lacks Dask distributed: pip install -e '.[cluster]'"
  mkdir -p "$state"
  ns_exists "$bridge_ns" || ip netns add "$bridge_ns"
  ip -n "$bridge_ns" link show br0 >/dev/null 2>&1 || ip -n "$bridge_ns" link add name br0 type bridge
  ip -n "$bridge_ns" link set br0 up
  local i=0 ns addr worker
  for entry in "${hosts[@]}"; do
    read -r ns addr worker <<<"$entry"
    make_host "$ns" "$addr" "$i"
    i=$((i + 1))
  done
  start scheduler "$server_ns" -m distributed.cli.dask_scheduler \
    --host 198.18.0.1 --port 8786 --no-dashboard
  for entry in "${hosts[@]}"; do
    read -r ns addr worker <<<"$entry"
    [ "$worker" = - ] && continue
    start "$worker" "$ns" -m distributed.cli.dask_worker "$scheduler" --no-nanny \
      --nthreads 1 --name "$worker" --host "$addr" --no-dashboard
  done
  local workers=2
  [ "$server_worker" = - ] || workers=3
  # Ready means every worker registered with the scheduler (60 s bound: interpreter
  # start-ups on a loaded machine).
  ip netns exec "$server_ns" "$python" -c "
import distributed
with distributed.Client('$scheduler', timeout='60s') as client:
    client.wait_for_workers($workers, timeout=60)
" >/dev/null 2>&1 || die "the Dask workers did not register within 60 s; logs in $state"
  local also=
  [ "$server_worker" = - ] || also=", server ($server_ns)"
  echo "netns-lab: $lab up: scheduler $scheduler in $server_ns; workers client1 ($lab-c1)," \
    "client2 ($lab-c2)$also${delay_ms:+; ${delay_ms} ms netem delay}"
}

stop_pid() {
  local file=$1
  if alive "$file"; then
    local pid
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

down() {
  if [ -d "$state" ]; then
    for file in "$state"/*.pid; do
      [ -e "$file" ] && stop_pid "$file"
    done
  fi
  local ns pids
  for ns in "$lab-c1" "$lab-c2" "$server_ns" "$bridge_ns"; do
    ns_exists "$ns" || continue
    # Whatever still runs in the lab (a server, load generator processes orphaned by a
    # killed worker) was started in it, for it.
    pids=$(ip netns pids "$ns")
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    ip netns del "$ns"
  done
  rm -rf "$state"
  echo "netns-lab: $lab down"
}

"$action"
