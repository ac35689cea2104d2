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
      --no-install-recommends wrk nginx-light strace gcc libc6-dev >/dev/null
  fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,cluster]'
echo "setup: ready; run .venv/bin/muxlab --help"
