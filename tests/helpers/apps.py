"""An app's files and the checks tests make of them: a table t(v) of app writes, and where
every acknowledged write went."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import urllib.error
from pathlib import Path

import apsw

from .daemons import Daemon, insert, sqlrepl, wait_until
from .replica import Replica


def app_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    conn.close()
    return path


def values(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {v for (v,) in conn.execute("SELECT v FROM t")}
    finally:
        conn.close()


def run_cli(*args: str) -> dict:
    result = sqlrepl(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def make_db(path: Path, *ddl: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(";".join(ddl))
    conn.commit()
    conn.close()
    return path


def rollbacks(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("*.rollback-*")) + sorted(tmp.glob("*.fork-*"))


def unaccounted(acked: set[str], final_db: Path, tmp: Path) -> set[str]:
    """Acknowledged writes neither on the final leader nor in an announced rollback file."""
    kept = values(final_db)
    for path in rollbacks(tmp):
        if path.suffix == ".jsonl":
            lines = path.read_text().splitlines()
            kept |= {json.loads(line).get("row", {}).get("v") for line in lines}
        else:
            kept |= values(path)
    return acked - kept


def big_db(path: Path, mib: int) -> Path:
    app_db(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
    conn.executemany("INSERT INTO blobs(b) VALUES(?)", [(os.urandom(1 << 20),) for _ in range(mib)])
    conn.commit()
    conn.close()
    return path


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".sqlrepl-tmp"))


def fingerprint(db: Path) -> tuple[str, bytes, list]:
    """The file's bytes, its journal mode (header bytes 18-19) and its schema."""
    data = db.read_bytes()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        schema = conn.execute("SELECT type, name FROM sqlite_schema ORDER BY name").fetchall()
    finally:
        conn.close()
    return hashlib.sha256(data).hexdigest(), data[18:20], schema


def refused(result, words: str, logs: bool = False) -> None:
    """Exit 1 with one line that says `words` (a daemon's log lines may come before it)."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert words in lines[-1] and "Traceback" not in result.stderr, result.stderr
    assert logs or len(lines) == 1, result.stderr


def write(r: Replica, *sql: str, params=()):
    app = apsw.Connection(str(r.leader_path))
    app.set_busy_timeout(5000)
    try:
        for s in sql:
            app.execute(s, params)
    finally:
        app.close()


#: The lease TTL of the etcd tests.
TTL = 4


def open_leader(nodes: list[Daemon]) -> Daemon | None:
    for node in nodes:
        if node.role() == "leader":
            try:
                if node.status().get("gate") == "open":
                    return node
            except (OSError, urllib.error.URLError):
                continue
    return None


def wait_open_leader(
    nodes: list[Daemon], what: str = "a leader with an open gate", deadline: float = 30.0
) -> Daemon:
    """Wait until a node leads with its gate open; that node (the one the wait saw: a
    second look could catch a cluster still settling)."""
    found: list[Daemon] = []

    def look() -> bool:
        node = open_leader(nodes)
        found[:] = [node] if node is not None else []
        return node is not None

    wait_until(look, what, deadline)
    return found[0]


def accepts_writes(db: Path) -> bool:
    try:
        insert(db, "probe")
        return True
    except sqlite3.DatabaseError:
        return False
