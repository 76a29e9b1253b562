#!/usr/bin/env bash
# Install everything the tests need (etcd included) into .venv, then run the whole suite.
#
#   scripts/test.sh                   # everything (what CI runs), then a quick bench
#   scripts/test.sh --quick           # the unit and node layers only, in process (< 30 s)
#   scripts/test.sh tests/e2e -k snap # any pytest arguments (no bench)
#   scripts/test.sh --count 20 -x tests/e2e/test_snapshots.py::test_x   # flush out a flake
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then
  quick=1
  shift
fi
if [ "$quick" = 0 ] && { ! command -v etcd >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1 \
  || ! command -v haproxy >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; }; then
  # etcd for the coordination tests; the sqlite3 shell is one of the real apps tested;
  # HAProxy routes by the health endpoints; Prometheus (and promtool) scrape /metrics.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq etcd-server sqlite3 haproxy prometheus >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
.venv/bin/ruff check sqlrepl tests scripts
.venv/bin/ruff format --check sqlrepl tests scripts
.venv/bin/mypy sqlrepl
if [ "$quick" = 1 ]; then
  exec .venv/bin/python -m pytest -q -m "unit or node" "$@"
fi
# The slowest tests are listed at the end: where the suite's wall time goes.
.venv/bin/python -m pytest -q --durations=15 "$@"
if [ $# -eq 0 ]; then
  # The benchmark is a smoke test here (it completes); no test asserts a duration.
  .venv/bin/python scripts/bench.py --quick --json >/dev/null && echo "bench --quick: ok"
fi
