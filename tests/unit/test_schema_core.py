"""Schema changes through capture → batch → apply in one process: renames, swaps, Hypothesis."""

from __future__ import annotations

import tempfile
from pathlib import Path

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..helpers.apps import write
from ..helpers.dump import dump, schema
from ..helpers.replica import Replica


def capture_triggers(r: Replica) -> list[tuple[str, str]]:
    return sorted(
        r.leader.execute(
            "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger' "
            "AND name LIKE '\\_sqlrepl\\_c%' ESCAPE '\\'"
        )
    )


def assert_same(r: Replica) -> None:
    assert schema(r.leader_path) == schema(r.follower_path)
    assert dump(r.leader_path) == dump(r.follower_path)


def test_renamed_table_keeps_one_set_of_capture_triggers(replica: Replica) -> None:
    """Triggers that follow a renamed table are replaced, not doubled: each change logs once."""
    write(replica, "CREATE TABLE a(id INTEGER PRIMARY KEY, v)", "INSERT INTO a VALUES(1, 'x')")
    replica.sync()
    write(replica, "ALTER TABLE a RENAME TO b")
    replica.sync()
    triggers = capture_triggers(replica)
    assert len(triggers) == 3 and {t for _n, t in triggers} == {"b"}
    before = replica.leader.execute("SELECT max(seq) FROM _sqlrepl_log").fetchall()[0][0]
    write(replica, "UPDATE b SET v = 'y'")
    after = replica.leader.execute("SELECT max(seq) FROM _sqlrepl_log").fetchall()[0][0]
    assert after == before + 1
    replica.sync()
    assert_same(replica)


def test_tables_swapping_names_are_captured_as_themselves(replica: Replica) -> None:
    """Two tables swap names in one transaction: later changes land in the right table."""
    write(
        replica,
        "CREATE TABLE a(id INTEGER PRIMARY KEY, v)",
        "CREATE TABLE b(id INTEGER PRIMARY KEY, v)",
        "INSERT INTO a VALUES(1, 'from a')",
        "INSERT INTO b VALUES(1, 'from b')",
    )
    replica.sync()
    write(
        replica,
        "BEGIN",
        "ALTER TABLE a RENAME TO tmp",
        "ALTER TABLE b RENAME TO a",
        "ALTER TABLE tmp RENAME TO b",
        "COMMIT",
    )
    replica.sync()
    write(replica, "UPDATE a SET v = 'new a'", "INSERT INTO b VALUES(2, 'new b')")
    replica.sync()
    assert_same(replica)
    assert {t for _n, t in capture_triggers(replica)} == {"a", "b"}


def test_rebuild_seen_step_by_step_converges(replica: Replica) -> None:
    """The 12-step rebuild, with the leader syncing between every step, converges."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    replica.sync()
    steps = [
        "CREATE TABLE t_new(v TEXT PRIMARY KEY, id INTEGER) WITHOUT ROWID",
        "INSERT INTO t_new SELECT v, id FROM t",
        "DROP TABLE t",
        "ALTER TABLE t_new RENAME TO t",
        "INSERT INTO t VALUES('b', 2)",
    ]
    for step in steps:
        write(replica, step)
        replica.sync()
        assert_same(replica)
    assert len(capture_triggers(replica)) == 3


def test_unique_index_built_after_the_rows_of_its_batch(replica: Replica) -> None:
    """Duplicates fixed, then a UNIQUE index created, arrive in one batch without a conflict."""
    write(
        replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1,'d'),(2,'d')"
    )
    replica.sync()
    write(replica, "UPDATE t SET v = 'e' WHERE id = 2", "CREATE UNIQUE INDEX t_v ON t(v)")
    replica.sync()
    assert_same(replica)


COLUMNS = ["a", "b", "c"]
ddl = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("drop"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("rename"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("index"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("unindex"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("rebuild"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("recreate"), st.sampled_from(COLUMNS)),
    st.tuples(st.just("view"), st.sampled_from(COLUMNS)),
)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
dml = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 6), st.one_of(st.none(), int64, st.text())),
    st.tuples(st.just("update"), st.integers(0, 6), st.one_of(st.none(), int64)),
    st.tuples(st.just("delete"), st.integers(0, 6), st.none()),
    st.tuples(st.just("sync"), st.integers(0, 0), st.none()),
)


def _columns(app: apsw.Connection) -> list[str]:
    return [r[1] for r in app.execute("PRAGMA table_info(t)") if r[1] != "id"]


def _ddl(app: apsw.Connection, kind: str, col: str) -> None:
    cols = _columns(app)
    if kind == "add" and col not in cols:
        app.execute(f"ALTER TABLE t ADD COLUMN {col} DEFAULT 'd'")
    elif kind == "drop" and col in cols and len(cols) > 1:
        app.execute(f"DROP INDEX IF EXISTS t_{col}")
        app.execute(f"ALTER TABLE t DROP COLUMN {col}")
    elif kind == "rename" and col in cols:
        new = next((c for c in COLUMNS if c not in cols), None)
        if new:
            app.execute(f"DROP INDEX IF EXISTS t_{col}")
            app.execute(f"ALTER TABLE t RENAME COLUMN {col} TO {new}")
    elif kind == "index" and col in cols:
        app.execute(f"CREATE INDEX IF NOT EXISTS t_{col} ON t({col})")
    elif kind == "unindex":
        app.execute(f"DROP INDEX IF EXISTS t_{col}")
    elif kind == "rebuild":
        keep = ", ".join(cols)
        app.execute("BEGIN")
        app.execute("DROP VIEW IF EXISTS v")  # views naming t go first, as SQLite's recipe says
        app.execute(f"CREATE TABLE t_new(id INTEGER PRIMARY KEY, {keep})")
        app.execute(f"INSERT INTO t_new SELECT id, {keep} FROM t")
        app.execute("DROP TABLE t")
        app.execute("ALTER TABLE t_new RENAME TO t")
        app.execute("COMMIT")
    elif kind == "recreate":
        app.execute("DROP VIEW IF EXISTS v")
        app.execute("DROP TABLE t")
        app.execute(f"CREATE TABLE t(id INTEGER PRIMARY KEY, {col})")
    elif kind == "view":
        app.execute("DROP VIEW IF EXISTS v")
        app.execute(f"CREATE VIEW v AS SELECT id FROM t WHERE id > {len(cols)}")


def _dml(app: apsw.Connection, kind: str, key: int, value: object) -> None:
    col = _columns(app)[0]
    if kind == "insert":
        app.execute(f"INSERT OR REPLACE INTO t(id, {col}) VALUES(?, ?)", (key, value))
    elif kind == "update":
        app.execute(f"UPDATE t SET {col} = ? WHERE id = ?", (value, key))
    elif kind == "delete":
        app.execute("DELETE FROM t WHERE id = ?", (key,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(ddl, dml), max_size=25))
def test_random_ddl_and_dml_replicate_exactly(operations: list[tuple]) -> None:
    """Any interleaving of schema changes, writes and syncs: same schema, same content."""
    with tempfile.TemporaryDirectory() as tmp:
        leader = Path(tmp) / "leader.db"
        app = apsw.Connection(str(leader))
        app.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, a)")
        replica = Replica(Path(tmp), leader)
        try:
            for op in operations:
                if op[0] == "sync":
                    replica.sync()
                elif len(op) == 2:
                    _ddl(app, *op)
                else:
                    _dml(app, *op)
            replica.sync()
            assert schema(leader) == schema(replica.follower_path)
            assert dump(leader) == dump(replica.follower_path)
        finally:
            app.close()
            replica.close()
