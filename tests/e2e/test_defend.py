"""sqlrepl's own tables defend themselves: an app or an ORM migration that drops or alters
them is noticed at once and said loudly, the leader rebuilds what it needs, and a
restart never silently makes a new cluster identity (every follower would then refuse
the leader)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..helpers.apps import accepts_writes, app_db, values
from ..helpers.daemons import Cluster, insert, wait_until
from ..helpers.dump import dump

#: What an ORM's autogenerate proposes for tables it does not know (Alembic does).
DROP_ALL = [
    "DROP TABLE _sqlrepl_log",
    "DROP TABLE _sqlrepl_tables",
    "DROP TABLE _sqlrepl_followers",
    "DROP TABLE _sqlrepl_meta",
]


def run_sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    for sql in statements:
        conn.execute(sql)
    conn.close()


def test_dropped_tables_are_noticed_said_and_rebuilt(tmp_path: Path, cluster: Cluster) -> None:
    """A migration drops every `_sqlrepl_*` table while the leader runs: the leader logs an
    ERROR, `status` names it in `problems` (so `status --check` fails), it rebuilds its
    tables under the same cluster identity, app writes work again, and the follower
    converges (it re-bootstraps: the log was lost)."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "b.db", leader)
    insert(db, "before")
    cluster.wait_caught_up(db, follower)
    cluster_id = leader.status()["cluster"]
    run_sql(db, *DROP_ALL)
    wait_until(lambda: "dropped" in str(leader.status().get("problems")), "the drop reported")
    wait_until(lambda: "ERROR" in leader.log() and "rebuilt" in leader.log(), "the rebuild said")
    assert leader.status()["cluster"] == cluster_id
    wait_until(lambda: accepts_writes(db), "app writes to work again")
    insert(db, "after")
    wait_until(lambda: "after" in values(tmp_path / "b.db"), "the follower to converge")
    assert dump(tmp_path / "b.db") == dump(db)
    check = subprocess.run(
        [sys.executable, "-m", "sqlrepl", "status", leader.url, "--check"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode != 0
    assert follower.status()["cluster"] == cluster_id


def alembic_autogenerate(db: Path) -> list[str]:
    """What `alembic revision --autogenerate` + `upgrade` does to a file whose models know
    only the app's table `t`: drop every table it does not know. Returns what it ran."""
    import sqlalchemy as sa
    from alembic.autogenerate import produce_migrations
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    models = sa.MetaData()
    sa.Table("t", models, sa.Column("id", sa.Integer, primary_key=True), sa.Column("v", sa.Text))
    engine = sa.create_engine(f"sqlite:///{db}", connect_args={"timeout": 10})
    try:
        with engine.begin() as conn:
            context = MigrationContext.configure(conn)
            script = produce_migrations(context, models)
            ops = Operations(context)
            assert script.upgrade_ops is not None
            ran = []
            for op in _flat(script.upgrade_ops.ops):
                if getattr(op, "table_name", None) == "t":
                    continue  # how the models spell the app's own table: not the point here
                ops.invoke(op)
                ran.append(type(op).__name__)
            return ran
    finally:
        engine.dispose()


def _flat(ops: list[Any]) -> Iterator[Any]:
    """Alembic's operations, those it groups per table one by one."""
    for op in ops:
        if hasattr(op, "ops"):
            yield from _flat(op.ops)
        else:
            yield op


#: What each round drops: each of sqlrepl's objects by hand, then all through Alembic.
DROPS = [
    "DROP TABLE _sqlrepl_log",
    "DROP TABLE _sqlrepl_meta",
    "DROP TABLE _sqlrepl_tables",
    "DROP TABLE _sqlrepl_followers",
    "DROP VIEW _sqlrepl_position",
    "alembic",
]


def test_drops_with_a_failed_transaction_held_open_never_stop_the_leader(
    tmp_path: Path, cluster: Cluster
) -> None:
    """20 rounds: one of sqlrepl's tables (or all, through Alembic's autogenerate) is
    dropped, then an app holds a failed transaction open for 1.5 s (the write lock: the
    leader cannot rebuild meanwhile). The leader never exits; capture comes back; a write
    made after each drop reaches the follower; the problem clears at the end; no log has
    a traceback."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    replica = tmp_path / "b.db"
    follower = cluster.follower(replica, leader)
    for round_ in range(20):
        drop = DROPS[round_ % len(DROPS)]
        if drop == "alembic":
            ran = alembic_autogenerate(db)
            assert ran.count("DropTableOp") >= 4, ran
        else:
            run_sql(db, drop)
        app = sqlite3.connect(db, isolation_level=None, timeout=10)
        app.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.DatabaseError):
            app.execute("INSERT INTO t(id, v) VALUES(1, 'x'), (1, 'x')")  # fails, stays open
        time.sleep(1.5)  # the app's own pace: what the test checks is what follows
        app.execute("ROLLBACK")
        app.close()
        wait_until(lambda: accepts_writes(db), f"app writes to work again after {drop!r}")
        value = f"after-{round_}"
        insert(db, value)
        wait_until(lambda v=value: v in values(replica), "the follower to get it", 60)
        assert leader.proc is not None and leader.proc.poll() is None, leader.log()
    wait_until(lambda: not leader.status()["problems"], "the problem to clear", 60)
    cluster.wait_caught_up(db, follower)
    assert dump(replica) == dump(db)
    assert "Traceback" not in leader.log() + follower.log()


def test_a_restart_after_the_tables_were_dropped_refuses_a_new_identity(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The tables are dropped while the leader is down: the same command refuses to start
    (one line, exit 1) instead of making the file the leader of a new cluster, and leaves
    the file as it was."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    insert(db, "kept")
    leader.stop()
    run_sql(db, *DROP_ALL)
    before = dump(db), _schema(db)
    assert leader.proc is not None
    leader.start(ready=False)
    assert leader.proc.wait(30) == 1
    last = leader.log().strip().splitlines()[-1]
    assert "_sqlrepl_" in last and "new cluster" in last, last
    assert "Traceback" not in leader.log()
    assert (dump(db), _schema(db)) == before


def _schema(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_schema ORDER BY name").fetchall()
    finally:
        conn.close()


def test_leaving_wal_or_shared_locking_gets_a_clear_answer(
    tmp_path: Path, cluster: Cluster
) -> None:
    """sqlrepl needs the leader file in WAL mode with shared locking. An app that switches
    to `journal_mode=DELETE` or takes `locking_mode=EXCLUSIVE` while the daemon runs gets
    SQLite's `database is locked` after its busy timeout (the daemon keeps the file open,
    as any reader would) — an error, never a hang — and nothing changes: the file stays
    in WAL mode, replication goes on."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    cluster.follower(tmp_path / "b.db", leader)
    app = sqlite3.connect(db, isolation_level=None, timeout=1)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        app.execute("PRAGMA journal_mode=DELETE").fetchall()
    app.execute("PRAGMA locking_mode=EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        app.execute("INSERT INTO t(v) VALUES('exclusive')")
    app.close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    insert(db, "after")
    wait_until(lambda: "after" in values(tmp_path / "b.db"), "replication to go on")
    assert leader.status()["problems"] == []
