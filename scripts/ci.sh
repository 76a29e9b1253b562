#!/usr/bin/env bash
# Run the suite the way CI does: a fresh clone of HEAD's committed tree, `bash .ci/run`
# with CI=true and no standard input, and the wall time at the end.
#
#   scripts/ci.sh                 # once
#   scripts/ci.sh --runs 3        # three times in a row, stopping at the first red run
#   scripts/ci.sh --burn          # with a process burning one core beside it
#   scripts/ci.sh -- -k snapshot  # arguments after -- go to pytest (the bench is skipped)
#
# Each run's output is kept in its clone's ci.log, and copied to /tmp/sqlrepl-ci-N.log
# (the slowest tests are at its end); the clone is removed when the run is green (kept
# when red, for its logs). To repeat one test, see scripts/test.sh --count.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
runs=1 burn=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --burn) burn=1; shift ;;
    --) shift; break ;;
    *) echo "usage: scripts/ci.sh [--runs N] [--burn] [-- PYTEST-ARGS]" >&2; exit 2 ;;
  esac
done
burner=""
if [ "$burn" = 1 ]; then
  python3 -c 'while True: pass' &
  burner=$!
fi
trap '[ -n "$burner" ] && kill "$burner" 2>/dev/null || true' EXIT
for run in $(seq 1 "$runs"); do
  clone="$(mktemp -d /tmp/sqlrepl-ci.XXXXXX)"
  git clone -q "$here" "$clone"
  start=$(date +%s)
  if (cd "$clone" && CI=true bash .ci/run "$@" </dev/null >"$clone/ci.log" 2>&1); then
    echo "run $run: green in $(($(date +%s) - start)) s; log: /tmp/sqlrepl-ci-$run.log"
    cp "$clone/ci.log" "/tmp/sqlrepl-ci-$run.log"
    rm -rf "$clone"
  else
    echo "run $run: RED after $(($(date +%s) - start)) s; log: $clone/ci.log"
    tail -n 30 "$clone/ci.log"
    exit 1
  fi
done
