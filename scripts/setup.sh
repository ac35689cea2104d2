#!/usr/bin/env bash
# Set up muxlab in a fresh clone: the Debian tools it drives (wrk, nginx, strace, and gcc
# for the C companion demo) when
# root or sudo is available, and a virtual environment in .venv holding muxlab, its
# dependencies, the test tools and the cluster extra (Dask, for muxlab load --cluster).
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    sudo=(none)
  fi
  if [ "${sudo[0]:-}" = none ]; then
    echo "setup: not root and no sudo: wrk and nginx not installed;" \
         "the wrk tests and the nginx peer will be skipped" >&2
  else
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends wrk nginx-light strace gcc libc6-dev iproute2 >/dev/null
  fi
fi

# The accept queue: muxlab servers listen with backlog net.core.somaxconn (read at start).
# At 4096, a ramp of 20,000 connections overflowed it whenever the server fell behind
# (a busy CPU), and each overflow is a dropped SYN that waits out a 1 s retransmission,
# then 3 s: connect timeouts (results/c20k/README.md). 65535 holds a whole C50K worker's
# ramp. The SYN queue (tcp_max_syn_backlog) never filled there, so it stays as it is.
somaxconn=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 65535)
if [ "$somaxconn" -lt 65535 ]; then
  if [ "$(id -u)" = 0 ]; then as_root=(); else as_root=(sudo -n); fi
  if "${as_root[@]}" sysctl -qw net.core.somaxconn=65535 2>/dev/null; then
    echo "setup: net.core.somaxconn $somaxconn -> 65535 (until reboot)"
  else
    echo "setup: net.core.somaxconn is $somaxconn; C20K ramps need 65535 (sysctl, as root)" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,cluster]'
echo "setup: ready; run .venv/bin/muxlab --help"
