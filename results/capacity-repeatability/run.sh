#!/bin/bash
# The capacity knee of epoll-lt at 0, 1,000 and 10,000 cold connections, four searches:
# the tree before issue 10's refactors (261ca53) and the final tree (2a3446c), interleaved.
# Prepare the trees first:
#   git archive 261ca53 | tar -x -C /tmp/old;  git archive 2a3446c | tar -x -C /tmp/newtree
set -u
ulimit -n 20000
PY=${PY:-.venv/bin/python}
PY=$(realpath "$PY")
OUT=${OUT:-/tmp/ab}
mkdir -p "$OUT"
for round in 1 2; do
  for tree in old new; do
    dir=/tmp/old; [ "$tree" = new ] && dir=/tmp/newtree
    (cd "$dir" && "$PY" -m muxlab sweep --preset default --experiments capacity --impls epoll-lt \
        --run-id "$tree-$round" --out-dir "$OUT" --no-charts --quiet > "$OUT/$tree-$round.txt" 2>&1)
    echo "$tree-$round rc=$?"
  done
done
