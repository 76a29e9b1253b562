"""Schema changes made by apps on the leader replicate, in order with the data (real daemons)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from ..helpers.daemons import Cluster, Daemon
from ..helpers.dump import dump, schema

BASE = [
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)",
    "CREATE TABLE ticks(id INTEGER PRIMARY KEY, at REAL)",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
    "INSERT INTO items(name, qty) SELECT 'item-' || i, i FROM n",
]


def run(db: Path, *statements: str) -> None:
    """Run statements in one transaction, as an app would (stdlib driver)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for s in statements:
            conn.execute(s)
        conn.execute("COMMIT")
    finally:
        conn.close()


@contextmanager
def ticking(db: Path) -> Iterator[None]:
    """Another connection inserting rows in small transactions the whole time."""
    stop = threading.Event()

    def tick() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        while not stop.is_set():
            conn.execute("INSERT INTO ticks(at) VALUES(julianday('now'))")
            time.sleep(0.001)  # a busy app, not a lock held forever: the leader gets its turn
        conn.close()

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sequences(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").fetchone()
        return sorted(conn.execute("SELECT * FROM sqlite_sequence")) if has else []
    finally:
        conn.close()


def caught_up(cluster: Cluster, db: Path, follower: Daemon) -> None:
    """Wait until the follower has everything committed so far.

    A DDL alone does not move the log head until the leader notices it, so a captured row is
    written after it and waited for: any batch holding that row was built after the DDL.
    """
    run(db, "INSERT INTO ticks(at) VALUES(julianday('now'))")
    cluster.wait_caught_up(db, follower)


def assert_same(db: Path, replica: Path) -> None:
    assert schema(db) == schema(replica)
    assert dump(db) == dump(replica)
    assert sequences(db) == sequences(replica)


@pytest.fixture
def pair(tmp_path: Path, cluster: Cluster) -> Iterator[tuple[Path, Path, Daemon]]:
    db = tmp_path / "app.db"
    run(db, "PRAGMA journal_mode=WAL")
    run(db, *BASE)
    leader = cluster.leader(db)
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    yield db, replica, follower


CHANGES = {
    "create table with rows in the same transaction": [
        "CREATE TABLE extra(k TEXT PRIMARY KEY, v) WITHOUT ROWID",
        "INSERT INTO extra VALUES('a', 1), ('b', x'00ff')",
    ],
    "drop table": ["DROP TABLE items"],
    "add column": ["ALTER TABLE items ADD COLUMN note TEXT DEFAULT 'n/a'"],
    "rename column": ["ALTER TABLE items RENAME COLUMN qty TO quantity"],
    "drop column": ["ALTER TABLE items DROP COLUMN qty"],
    "rename table": ["ALTER TABLE items RENAME TO products"],
    "rebuild with a changed primary key": [
        "CREATE TABLE items_new(name TEXT PRIMARY KEY, id INTEGER, qty INTEGER) WITHOUT ROWID",
        "INSERT INTO items_new SELECT name, id, qty FROM items",
        "DROP TABLE items",
        "ALTER TABLE items_new RENAME TO items",
    ],
    "unique index made valid by the same batch": [
        "UPDATE items SET name = 'dup' WHERE id IN (1, 2)",
    ],
    "indexes, unique and partial": [
        "CREATE UNIQUE INDEX items_name ON items(name)",
        "CREATE INDEX items_big ON items(qty) WHERE qty > 10",
        "CREATE INDEX items_expr ON items(lower(name))",
    ],
    "views and the app's triggers": [
        "CREATE TABLE audit(id INTEGER PRIMARY KEY, item INTEGER, what TEXT)",
        "CREATE VIEW big AS SELECT * FROM items WHERE qty > 10",
        "CREATE TRIGGER items_audit AFTER INSERT ON items "
        "BEGIN INSERT INTO audit(item, what) VALUES(NEW.id, 'added'); END",
    ],
    "strict table with generated columns": [
        "CREATE TABLE s(id INTEGER PRIMARY KEY, a INT, b TEXT, "
        "c INT GENERATED ALWAYS AS (a * 2) STORED, d INT GENERATED ALWAYS AS (a + 1) VIRTUAL) "
        "STRICT",
        "INSERT INTO s(a, b) VALUES(1, 'x'), (2, NULL)",
    ],
    "autoincrement": [
        "CREATE TABLE seqd(id INTEGER PRIMARY KEY AUTOINCREMENT, v)",
        "INSERT INTO seqd(v) VALUES(1), (2), (3)",
        "DELETE FROM seqd WHERE id = 3",
    ],
    "fts5, plain and external content": [
        "CREATE VIRTUAL TABLE docs USING fts5(title, body)",
        "INSERT INTO docs VALUES('hello', 'the quick brown fox'), ('bye', 'lazy dogs')",
        "CREATE VIRTUAL TABLE items_fts USING fts5(name, content='items', content_rowid='id')",
        "INSERT INTO items_fts(items_fts) VALUES('rebuild')",
        "CREATE VIRTUAL TABLE bare USING fts5(words, content='')",
        "INSERT INTO bare(rowid, words) VALUES(1, 'quick start'), (2, 'slow finish')",
    ],
}

AFTER = {
    "unique index made valid by the same batch": [
        "UPDATE items SET name = 'one' WHERE id = 1",
        "CREATE UNIQUE INDEX items_name ON items(name)",
    ],
    "views and the app's triggers": ["INSERT INTO items(name, qty) VALUES('late', 99)"],
    "autoincrement": ["INSERT INTO seqd(v) VALUES(4)", "DELETE FROM seqd WHERE id = 4"],
    "fts5, plain and external content": [
        "INSERT INTO docs VALUES('again', 'quick thinking')",
        "DELETE FROM docs WHERE title = 'bye'",
    ],
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_schema_change_replicates_with_writes_around_it(
    change: str, pair: tuple[Path, Path, Daemon], cluster: Cluster
) -> None:
    """Each kind of DDL: the follower ends identical in schema, content and sequences."""
    db, replica, follower = pair
    with ticking(db):
        run(db, "UPDATE items SET qty = qty + 1 WHERE id % 3 = 0")
        run(db, *CHANGES[change])
        if change in AFTER:
            run(db, *AFTER[change])
        for table in ("items", "products"):
            with suppress(sqlite3.OperationalError):  # the change may have dropped or renamed it
                run(db, f"INSERT INTO {table}(name, qty) VALUES('after', 7)")
    caught_up(cluster, db, follower)
    assert_same(db, replica)


def test_fts5_queries_match_on_the_follower(
    pair: tuple[Path, Path, Daemon], cluster: Cluster
) -> None:
    """Full-text queries on the follower return what they return on the leader."""
    db, replica, follower = pair
    run(db, *CHANGES["fts5, plain and external content"])
    run(db, *AFTER["fts5, plain and external content"])
    caught_up(cluster, db, follower)
    queries = [
        "SELECT rowid, title FROM docs WHERE docs MATCH 'quick' ORDER BY rank",
        "SELECT rowid FROM items_fts WHERE items_fts MATCH 'item' ORDER BY rowid",
        "SELECT count(*) FROM items_fts WHERE items_fts MATCH 'after'",
        "SELECT rowid FROM bare WHERE bare MATCH 'quick'",
    ]
    for q in queries:
        leader_rows = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(q).fetchall()
        follower_rows = sqlite3.connect(f"file:{replica}?mode=ro", uri=True).execute(q).fetchall()
        assert leader_rows == follower_rows and leader_rows


def sqlite_utils(*args: str) -> None:
    tool = Path(sys.executable).parent / "sqlite-utils"
    result = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_sqlite_utils_cli_as_the_writer(tmp_path: Path, cluster: Cluster) -> None:
    """The real sqlite-utils CLI changes data and schema on the leader; the follower follows."""
    db = tmp_path / "app.db"
    run(db, "PRAGMA journal_mode=WAL")
    run(db, "CREATE TABLE ticks(id INTEGER PRIMARY KEY, at REAL)")
    leader = cluster.leader(db)
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    people = tmp_path / "people.json"
    people.write_text(
        json.dumps([{"id": i, "name": f"Person {i}", "score": i * 1.5} for i in range(30)])
    )
    places = tmp_path / "places.csv"
    places.write_text("city,country\nLyon,FR\nOslo,NO\nKyoto,JP\n")
    more = tmp_path / "more.json"
    more.write_text(
        json.dumps([{"id": 3, "name": "Changed", "score": 0.1}, {"id": 99, "name": "New"}])
    )
    s = str(db)
    sqlite_utils("insert", s, "people", str(people), "--pk", "id")
    sqlite_utils("insert", s, "places", str(places), "--csv")
    sqlite_utils("upsert", s, "people", str(more), "--pk", "id")
    sqlite_utils("add-column", s, "people", "age", "integer")
    sqlite_utils(
        "transform", s, "people", "--rename", "name", "full_name", "--type", "score", "text"
    )
    sqlite_utils("create-index", s, "people", "full_name")
    sqlite_utils("enable-fts", s, "people", "full_name", "--create-triggers")
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps([{"id": 5, "full_name": "Renamed Person", "age": 40}]))
    sqlite_utils("insert", s, "people", str(renamed), "--pk", "id", "--replace")
    sqlite_utils("drop-table", s, "places")
    caught_up(cluster, db, follower)
    assert_same(db, replica)
    q = "SELECT rowid FROM people_fts WHERE people_fts MATCH 'person' ORDER BY rowid"
    found = [
        sqlite3.connect(f"file:{p}?mode=ro", uri=True).execute(q).fetchall() for p in (db, replica)
    ]
    assert found[0] == found[1] and len(found[0]) == 29


MIGRATIONS = [
    [
        "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        "INSERT INTO users(name) VALUES('ada'), ('grace'), ('linus')",
    ],
    [
        "ALTER TABLE users ADD COLUMN email TEXT",
        "UPDATE users SET email = name || '@example.com'",
        "CREATE UNIQUE INDEX users_email ON users(email)",
    ],
    [
        "CREATE TABLE profiles(user_id INTEGER PRIMARY KEY REFERENCES users(id), bio TEXT)",
        "INSERT INTO profiles SELECT id, 'bio of ' || name FROM users",
        "CREATE TABLE users_new(id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, "
        "created REAL DEFAULT 0)",
        "INSERT INTO users_new(id, email) SELECT id, email FROM users",
        "DROP TABLE users",
        "ALTER TABLE users_new RENAME TO users",
    ],
    [
        "ALTER TABLE users RENAME TO accounts",
        "CREATE INDEX accounts_created ON accounts(created)",
        "CREATE VIEW account_bios AS SELECT a.email, p.bio FROM accounts a "
        "JOIN profiles p ON p.user_id = a.id",
    ],
]


def migrate(db: Path, version: int) -> None:
    """One ORM-style migration: the schema change and its version row, in one transaction."""
    run(
        db,
        *MIGRATIONS[version],
        "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY)",
        f"INSERT INTO schema_migrations VALUES({version})",
    )


def test_orm_migrations_while_other_connections_insert(
    pair: tuple[Path, Path, Daemon], cluster: Cluster, tmp_path: Path
) -> None:
    """Four migrations run while another connection inserts; a follower stopped in the middle
    and one bootstrapped in the middle both converge."""
    db, replica, follower = pair
    late = tmp_path / "late.db"
    with ticking(db):
        migrate(db, 0)
        migrate(db, 1)
        follower.stop()
        leader = next(d for d in cluster.daemons if d.name.startswith("leader"))
        newcomer = cluster.follower(late, leader)
        migrate(db, 2)
        follower.start()
        migrate(db, 3)
        run(db, "INSERT INTO accounts(email) VALUES('new@example.com')")
    caught_up(cluster, db, follower)
    cluster.wait_caught_up(db, newcomer)
    assert_same(db, replica)
    assert_same(db, late)
    rows = sqlite3.connect(f"file:{replica}?mode=ro", uri=True).execute(
        "SELECT count(*) FROM account_bios"
    )
    assert rows.fetchone()[0] == 3


def test_what_cannot_be_replicated_is_reported_loudly(
    pair: tuple[Path, Path, Daemon], cluster: Cluster
) -> None:
    """An R*Tree table and a table hiding its rowid are named in the leader's log and status."""
    db, replica, follower = pair
    leader = next(d for d in cluster.daemons if d.name.startswith("leader"))
    run(
        db,
        "CREATE VIRTUAL TABLE shapes USING rtree(id, x0, x1)",
        "CREATE TABLE hidden(rowid TEXT, _rowid_ TEXT, oid TEXT)",
    )
    caught_up(cluster, db, follower)
    status = leader.status()
    assert any("'shapes'" in p for p in status["problems"]), status
    assert any("'hidden'" in p for p in status["problems"]), status
    assert "'shapes' is not replicated" in status["error"]
    assert "ERROR sqlrepl.leader: virtual table 'shapes' is not replicated" in leader.log()
    run(db, "INSERT INTO items(name, qty) VALUES('still replicating', 1)")
    caught_up(cluster, db, follower)
    assert dump(db)["items"] == dump(replica)["items"]
