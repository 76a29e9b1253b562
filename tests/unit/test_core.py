"""Capture → batch → apply in one process, on real files."""

from __future__ import annotations

import apsw
import pytest

from sqlrepl.core import apply, capture
from sqlrepl.core.positions import log_head

from ..helpers.apps import write
from ..helpers.dump import dump
from ..helpers.replica import Replica


def test_insert_update_delete_replicate(replica: Replica) -> None:
    """Rows inserted, updated and deleted on the leader end the same on the follower."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    replica.sync()
    write(
        replica,
        "INSERT INTO t(name, score) VALUES('a', 1.5), ('b', 2.25), ('c', NULL)",
        "UPDATE t SET score = 9 WHERE name = 'a'",
        "DELETE FROM t WHERE name = 'b'",
    )
    pos = replica.sync()
    assert pos.seq > 0
    assert dump(replica.leader_path) == dump(replica.follower_path)


EXACT_VALUES = [
    None,
    0,
    -(2**63),
    2**63 - 1,
    1.0,
    -0.0,
    0.1 + 0.2,
    5e-324,
    1.7976931348623157e308,
    float("inf"),
    float("-inf"),
    "",
    "plain",
    "nul\x00inside",
    "non-BMP 😀 \U0010ffff",
    b"",
    b"\x00\xff" * 10,
    bytes(range(256)) * 4096,
]


def test_exact_values(replica: Replica) -> None:
    """Every storable value arrives with the same type and the same bytes."""
    write(replica, "CREATE TABLE v(id INTEGER PRIMARY KEY, x)")
    app = apsw.Connection(str(replica.leader_path))
    app.executemany("INSERT INTO v(x) VALUES(?)", [(x,) for x in EXACT_VALUES])
    app.close()
    replica.sync()
    leader, follower = dump(replica.leader_path), dump(replica.follower_path)
    assert leader == follower
    assert len(follower["v"]) == len(EXACT_VALUES)


def test_rollback_leaves_nothing(replica: Replica) -> None:
    """A rolled-back transaction is not captured."""
    write(replica, "CREATE TABLE t(x)")
    before = replica.sync()
    app = apsw.Connection(str(replica.leader_path))
    app.execute("BEGIN; INSERT INTO t VALUES(1); ROLLBACK;")
    app.close()
    assert replica.sync() == before


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE t(a, b)",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a, b)",
        "CREATE TABLE t(a TEXT, b INT, PRIMARY KEY(a, b))",
        "CREATE TABLE t(a TEXT, b INT, PRIMARY KEY(a, b)) WITHOUT ROWID",
        "CREATE TABLE t(a TEXT PRIMARY KEY COLLATE NOCASE, b) WITHOUT ROWID",
    ],
)
def test_table_shapes_and_key_updates(replica: Replica, ddl: str) -> None:
    """Rowid, IPK, composite and WITHOUT ROWID tables replicate, also when keys change."""
    write(replica, ddl)
    write(replica, "INSERT INTO t(a, b) VALUES('x', 1), ('y', 2), ('z', 3)")
    replica.sync()
    write(
        replica,
        "UPDATE t SET a = 'w' WHERE a = 'x'",
        "UPDATE t SET b = b + 10",
        "DELETE FROM t WHERE a = 'z'",
        "INSERT INTO t(a, b) VALUES('x', 1)",
    )
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)


def test_implicit_rowids_are_kept(replica: Replica) -> None:
    """A table with no declared key keeps the leader's rowids on the follower."""
    write(replica, "CREATE TABLE t(x)", "INSERT INTO t(rowid, x) VALUES(7, 'a'), (1000, 'b')")
    replica.sync()
    rows = apsw.Connection(str(replica.follower_path)).execute("SELECT rowid, x FROM t").fetchall()
    assert rows == [(7, "a"), (1000, "b")]


def test_unique_values_swapped_in_one_transaction(replica: Replica) -> None:
    """Swapping UNIQUE values between rows inside one transaction does not trip the follower."""
    write(replica, "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    write(replica, "INSERT INTO u VALUES(1, 'a@x'), (2, 'b@x')")
    replica.sync()
    write(
        replica,
        "BEGIN; UPDATE u SET email = 'tmp' WHERE id = 1; UPDATE u SET email = 'a@x' WHERE id = 2;"
        " UPDATE u SET email = 'b@x' WHERE id = 1; COMMIT;",
    )
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)


def test_replace_through_unique_index_is_captured(replica: Replica) -> None:
    """INSERT OR REPLACE that removes a row through a secondary UNIQUE index replicates."""
    write(replica, "CREATE TABLE u(id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    write(replica, "INSERT INTO u VALUES(1, 'a@x'), (2, 'b@x')")
    replica.sync()
    write(replica, "INSERT OR REPLACE INTO u VALUES(3, 'a@x')")
    write(replica, "UPDATE OR REPLACE u SET email = 'b@x' WHERE id = 3")
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)
    assert dump(replica.follower_path)["u"] == [(("int", 3), ("int", 3), ("str", "b@x"))]


def test_fk_cascades_and_app_triggers_arrive_once(replica: Replica) -> None:
    """FK cascades and the app's own triggers replicate their effects exactly once."""
    write(
        replica,
        "CREATE TABLE p(id INTEGER PRIMARY KEY)",
        "CREATE TABLE c(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE)",
        "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)",
        "CREATE TRIGGER c_ins AFTER INSERT ON c "
        "BEGIN INSERT INTO audit(what) VALUES('c' || NEW.id); END",
    )
    replica.sync()
    app = apsw.Connection(str(replica.leader_path))
    app.execute("PRAGMA foreign_keys=ON")
    app.execute("INSERT INTO p VALUES(1),(2); INSERT INTO c VALUES(10, 1), (11, 2), (12, 2)")
    app.execute("DELETE FROM p WHERE id = 2")
    app.close()
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)
    assert len(dump(replica.follower_path)["audit"]) == 3


def test_row_updated_many_times_ships_once(replica: Replica) -> None:
    """A row updated 1,000 times between batches ships as one image."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, n)", "INSERT INTO t VALUES(1, 0)")
    replica.sync()
    app = apsw.Connection(str(replica.leader_path))
    for _ in range(1000):
        app.execute("UPDATE t SET n = n + 1")
    app.close()
    data = replica.batch_bytes()
    assert len(data) < 1000
    apply.apply_stream(replica.follower, data)
    assert dump(replica.follower_path)["t"] == [(("int", 1), ("int", 1), ("int", 1000))]


def test_follower_refuses_app_writes_naming_the_leader(replica: Replica) -> None:
    """An app's write to the follower fails with an error naming the leader and changes nothing."""
    write(replica, "CREATE TABLE t(x)", "INSERT INTO t VALUES(1)")
    replica.sync()
    app = apsw.Connection(str(replica.follower_path))
    with pytest.raises(apsw.ConstraintError, match="http://leader.test"):
        app.execute("INSERT INTO t VALUES(2)")
    with pytest.raises(apsw.ConstraintError, match="read-only follower"):
        app.execute("DELETE FROM t")
    app.close()
    assert dump(replica.follower_path)["t"] == [(("int", 1), ("int", 1))]


def test_the_log_bounds_itself_and_seq_never_goes_back(replica: Replica) -> None:
    """With a log limit of one, every app write drops the entry before it in its own
    transaction; new changes still get higher seqs, and a follower behind the log is
    told to re-bootstrap."""
    from sqlrepl.core.positions import trimmed
    from sqlrepl.errors import SnapshotNeeded

    write(replica, "CREATE TABLE t(x)")
    capture.install(replica.leader, log_limit=1)
    write(replica, "INSERT INTO t VALUES(1)")
    top = log_head(replica.leader)
    assert replica.leader.execute("SELECT count(*) FROM _sqlrepl_log").fetchall() == [(1,)]
    write(replica, "INSERT INTO t VALUES(2)")
    assert log_head(replica.leader) == top + 1
    assert trimmed(replica.leader) == top
    with pytest.raises(SnapshotNeeded):
        replica.sync()
    assert capture.installed(replica.leader, log_limit=1)
    assert not capture.installed(replica.leader, log_limit=2)


def test_new_table_rows_written_before_capture_arrive(replica: Replica) -> None:
    """A table created and filled before capture is installed arrives whole."""
    write(replica, "CREATE TABLE late(x)", "INSERT INTO late VALUES(1), (2)")
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)
    assert len(dump(replica.follower_path)["late"]) == 2


def test_vacuum_renumbering_is_resynced(replica: Replica) -> None:
    """VACUUM renumbers implicit rowids; the follower is resynced to the new ones."""
    write(
        replica,
        "CREATE TABLE t(x)",
        "INSERT INTO t VALUES(1), (2), (3)",
        "DELETE FROM t WHERE x = 1",
    )
    replica.sync()
    write(replica, "VACUUM")
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)


def test_table_shapes_are_reread_after_a_schema_change(replica: Replica) -> None:
    """A column added between batches reaches the follower (no stale cached table shape)."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, a)", "INSERT INTO t(a) VALUES(1)")
    replica.sync()
    write(replica, "ALTER TABLE t ADD COLUMN b", "UPDATE t SET b = 'new'")
    replica.sync()
    write(replica, "INSERT INTO t(a, b) VALUES(2, 'after')")
    replica.sync()
    assert dump(replica.leader_path) == dump(replica.follower_path)
    assert dump(replica.follower_path)["t"][-1] == (
        ("int", 2),
        ("int", 2),
        ("int", 2),
        ("str", "after"),
    )


def test_a_batch_request_parses_what_it_builds_and_refuses_bad_parameters() -> None:
    """The follower's pull and the leader's parse are one definition: a round trip is
    exact, and a malformed parameter is a ProtocolError naming it."""
    from sqlrepl.core.requests import BatchRequest
    from sqlrepl.errors import ProtocolError

    asked = BatchRequest(41, 3, 5, "n1", "http://f:1", {"docs": "ab12"}, "http://l:1", True)
    assert BatchRequest.parse(asked.query()) == asked
    assert BatchRequest.parse({"after": "7"}) == BatchRequest(7)
    for query, said in (({}, "missing parameter after"), ({"after": "x"}, "after must be"),
                        ({"after": "1", "fts5": "[1]"}, "fts5 must be a JSON object")):  # fmt: skip
        with pytest.raises(ProtocolError, match=said):
            BatchRequest.parse(query)


def test_extras_are_put_back_only_while_the_core_tables_are_there(tmp_path) -> None:
    """A migration drops the followers' table, then (before the leader acts) the meta,
    log and tables tables: putting the extras back must not re-create an empty meta
    table (that unmade the leader for good: no role, no rebuild)."""
    from sqlrepl.core import internals

    conn = apsw.Connection(str(tmp_path / "a.db"))
    capture.install(conn, log_limit=100)
    conn.execute("DROP TABLE _sqlrepl_followers")
    assert internals.missing_extras(conn) == ["_sqlrepl_followers"]
    conn.execute("DROP TABLE _sqlrepl_log; DROP TABLE _sqlrepl_meta; DROP TABLE _sqlrepl_tables")
    assert internals.recreate_extras(conn) is False
    assert sorted(internals.missing_internals(conn)) == [
        "_sqlrepl_log",
        "_sqlrepl_meta",
        "_sqlrepl_tables",
    ]
    other = apsw.Connection(str(tmp_path / "b.db"))
    capture.install(other, log_limit=100)
    other.execute("DROP TABLE _sqlrepl_followers")
    assert internals.recreate_extras(other) is True
    assert internals.missing_extras(other) == []
