#!/usr/bin/env bash
# Install everything the tests need (etcd included) into .venv, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1 \
  || ! command -v haproxy >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  # etcd for the coordination tests; the sqlite3 shell is one of the real apps tested;
  # HAProxy routes by the health endpoints; Prometheus (and promtool) scrape /metrics.
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq etcd-server sqlite3 haproxy prometheus >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]'
.venv/bin/ruff check sqlrepl tests scripts
.venv/bin/mypy sqlrepl
.venv/bin/python -m pytest -q "$@"
if [ $# -eq 0 ]; then
  # The benchmark is a smoke test here (it completes); no test asserts a duration.
  .venv/bin/python scripts/bench.py --quick --json >/dev/null && echo "bench --quick: ok"
fi
