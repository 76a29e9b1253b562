"""Real apps with their drivers' stock settings against a live leader, each also run on a
plain file as the control: they must see no error on the leader that the plain file does
not give them (DESIGN invariant 7). The daemon writes nothing to the app's file in steady
state, so an app's deferred read-then-write transaction never meets `database is locked`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ..helpers.apps import app_db
from ..helpers.daemons import Cluster, Daemon, wait_until
from ..helpers.dump import dump, scalar

#: A Django "request" loop with stock settings: ATOMIC (deferred BEGIN), read a counter,
#: ~20 ms of work, write it back; each failure is printed, the count of requests last.
DJANGO_APP = """
import sys, time
import django
from django.conf import settings
settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                          "NAME": sys.argv[1]}})
django.setup()
from django.db import connection, transaction, OperationalError
if sys.argv[2] == "migrate":
    with connection.cursor() as c:
        c.execute("CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER)")
        c.execute("INSERT INTO counter VALUES(1, 0)")
    sys.exit(0)
end, requests, failed = time.monotonic() + float(sys.argv[2]), 0, 0
while time.monotonic() < end:
    requests += 1
    try:
        with transaction.atomic():
            with connection.cursor() as c:
                c.execute("SELECT n FROM counter WHERE id = 1")
                (n,) = c.fetchone()
                time.sleep(0.02)
                c.execute("UPDATE counter SET n = %s WHERE id = 1", [n + 1])
    except OperationalError as exc:
        failed += 1
        print("FAILED:", exc, flush=True)
print("requests", requests, "failed", failed)
"""


def converged(db: Path, copy: Path, follower: Daemon, cluster: Cluster) -> None:
    """The follower holds what the leader holds (schema changes included: they reach
    followers once capture caught up with them, at a quiet moment)."""
    wait_until(lambda: dump(copy) == dump(db), "the follower to equal the leader")
    cluster.wait_caught_up(db, follower)


def run_app(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("where", ["plain file", "leader"])
def test_django_request_loop_sees_no_error(tmp_path: Path, cluster: Cluster, where: str) -> None:
    """Django's default ATOMIC read-then-write loop for 30 s, after a migration, while the
    leader runs with its old trim and retention settings at their shortest: 0 failures,
    as on a plain file; the follower equals the leader."""
    pytest.importorskip("django")
    db = app_db(tmp_path / "app.db")
    if where == "leader":
        leader = cluster.leader(db, "--trim-interval", "0.5", "--retention", "1")
        follower = cluster.follower(tmp_path / "f.db", leader)
    run_app(DJANGO_APP, str(db), "migrate")
    if where == "leader":
        # A deploy: the migration replicated (capture caught up at a quiet moment), then
        # the app serves requests.
        converged(db, tmp_path / "f.db", follower, cluster)
    out = run_app(DJANGO_APP, str(db), "30")
    assert "failed 0" in out, out
    if where == "leader":
        converged(db, tmp_path / "f.db", follower, cluster)


SQLITE_UTILS_APP = """
import sys
import sqlite_utils
db = sqlite_utils.Database(sys.argv[1])
calls = 0
def call(fn, *a, **k):
    global calls
    calls += 1
    return fn(*a, **k)
for i in range(int(sys.argv[2])):
    t = db[f"t{i}"]
    call(t.insert_all, [{"id": j, "name": f"n{j}", "v": j * 0.5} for j in range(50)], pk="id")
    call(t.create_index, ["name"])
    call(t.add_column, "extra", str)
    call(t.upsert, {"id": 3, "name": "changed", "extra": "x"}, pk="id")
    call(t.transform, types={"v": str}, rename={"extra": "more"})
    call(t.enable_fts, ["name"])
    call(t.insert, {"id": 100, "name": "searchable"})
print("calls", calls)
"""


@pytest.mark.parametrize("where", ["plain file", "leader"])
def test_sqlite_utils_api_builds_tables_without_an_error(
    tmp_path: Path, cluster: Cluster, where: str
) -> None:
    """The sqlite-utils Python API with stock settings builds 25 tables with inserts,
    indexes, new columns, upserts, rebuilds (transform) and FTS while replication runs:
    no call fails; the follower equals the leader."""
    pytest.importorskip("sqlite_utils")
    db = app_db(tmp_path / "app.db")
    if where == "leader":
        leader = cluster.leader(db)
        follower = cluster.follower(tmp_path / "f.db", leader)
    out = run_app(SQLITE_UTILS_APP, str(db), "25")
    assert "calls 175" in out, out
    if where == "leader":
        converged(db, tmp_path / "f.db", follower, cluster)


@pytest.mark.parametrize("where", ["plain file", "leader"])
def test_sqlite3_shell_create_then_insert(tmp_path: Path, cluster: Cluster, where: str) -> None:
    """The sqlite3 command-line shell (no busy timeout at all) creates a table in one
    invocation and inserts into it in the next, 60 times: no invocation fails."""
    shell = "/usr/bin/sqlite3"
    if not os.path.exists(shell):
        pytest.skip("the sqlite3 shell is not installed (scripts/test.sh installs it)")
    db = app_db(tmp_path / "app.db")
    if where == "leader":
        leader = cluster.leader(db)
        follower = cluster.follower(tmp_path / "f.db", leader)
    failures = []
    for i in range(60):
        create, fill = (
            f"CREATE TABLE s{i}(id INTEGER PRIMARY KEY, v)",
            f"INSERT INTO s{i}(v) VALUES(1)",
        )
        for sql in (create, fill):
            done = subprocess.run([shell, str(db), sql], capture_output=True, text=True)
            if done.returncode != 0 or done.stderr:
                failures.append(f"{sql}: {done.stderr.strip()}")
    assert failures == []
    if where == "leader":
        converged(db, tmp_path / "f.db", follower, cluster)


def test_restarts_while_an_app_writes_in_a_tight_loop(tmp_path: Path, cluster: Cluster) -> None:
    """kill -9 and restart of the leader daemon ten times while an app commits with no
    pause between transactions: it comes up every time (no write is needed when capture
    is installed; any it needs is retried, never fatal), and the follower converges."""
    db = app_db(tmp_path / "app.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "f.db", leader)
    app = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sqlite3, sys
            conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
            i = 0
            while True:
                i += 1
                conn.execute("INSERT INTO t(v) VALUES(?)", (f"tight-{i}",))
        """), str(db)],
    )  # fmt: skip
    try:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM t") > 100, "the app writing")
        for _round in range(10):
            leader.kill9()
            leader.start()
            assert "database is locked" not in leader.log()
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    cluster.wait_caught_up(db, follower)
    assert dump(tmp_path / "f.db") == dump(db)


def test_no_daemon_commit_in_steady_state(tmp_path: Path, cluster: Cluster) -> None:
    """With an app writing continuously and no schema change, the leader daemon commits
    nothing to the file, whatever its old trim and retention settings: the app's
    `PRAGMA data_version` moves only when another connection commits, and it never does."""
    db = app_db(tmp_path / "app.db")
    leader = cluster.leader(db, "--trim-interval", "0.2", "--retention", "0.5")
    follower = cluster.follower(tmp_path / "f.db", leader)
    cluster.wait_caught_up(db, follower)
    app = sqlite3.connect(db, isolation_level=None)
    foreign = 0
    end = time.monotonic() + 5
    while time.monotonic() < end:
        before = app.execute("PRAGMA data_version").fetchone()[0]
        app.execute("INSERT INTO t(v) VALUES('steady')")
        time.sleep(0.02)
        if app.execute("PRAGMA data_version").fetchone()[0] != before:
            foreign += 1
    app.close()
    assert foreign == 0, f"{foreign} commits by the daemon in 5 s of steady state"
    cluster.wait_caught_up(db, follower)
