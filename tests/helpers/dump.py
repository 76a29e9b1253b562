"""Canonical content of a database: every user table, every row, every value with its type."""

from __future__ import annotations

import sqlite3
from typing import Any


def tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
        "AND name NOT LIKE '\\_sqlrepl\\_%' ESCAPE '\\' ORDER BY name"
    )
    return [name for (name,) in rows]


def _value(v: Any) -> Any:
    if isinstance(v, float):
        return ("real", v.hex())
    return (type(v).__name__, v)


def dump(path: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every user table with typed values, rowids included, in a stable order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for table in tables(conn):
            q = '"' + table.replace('"', '""') + '"'
            sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[
                0
            ]
            without_rowid = "WITHOUT ROWID" in sql.upper()
            cols = "*" if without_rowid else "_rowid_ AS __rowid, *"
            rows = [tuple(_value(v) for v in r) for r in conn.execute(f"SELECT {cols} FROM {q}")]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def scalar(path: Any, sql: str) -> Any:
    """One value read from the file (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def log_head(path: Any) -> int:
    """The newest seq in a leader's change log."""
    return int(scalar(path, "SELECT coalesce(max(seq), 0) FROM _sqlrepl_log"))


def epoch(path: Any) -> int:
    """The epoch a sqlrepl file is on, read from the file itself."""
    return int(scalar(path, "SELECT value FROM _sqlrepl_meta WHERE key = 'epoch'"))


def applied_seq(path: Any) -> int:
    """The position a follower file holds, read from the file itself."""
    return int(scalar(path, "SELECT value FROM _sqlrepl_meta WHERE key = 'seq'"))


def schema(path: Any) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(
            conn.execute(
                "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL "
                "AND name NOT LIKE '\\_sqlrepl\\_%' ESCAPE '\\' "
                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            )
        )
    finally:
        conn.close()
