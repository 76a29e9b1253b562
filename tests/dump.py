"""Canonical content of a database: every user table, every row, every value with its type."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlrepl.schema import user_tables
from sqlrepl.db import connect


def _value(v: Any) -> Any:
    if isinstance(v, float):
        return ("real", v.hex())
    return (type(v).__name__, v)


def dump(path: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of every user table with typed values, rowids included, in a stable order."""
    conn = connect(path, readonly=True)
    try:
        out = {}
        for table in user_tables(conn):
            q = '"' + table.replace('"', '""') + '"'
            without_rowid = any(
                r[3] == "pk" for r in conn.execute(f"PRAGMA index_list({q})")
            ) and not conn.execute(
                f"SELECT 1 FROM sqlite_schema WHERE name=? AND sql LIKE '%WITHOUT ROWID%'", (table,)
            ).fetchone() is None
            cols = "*" if without_rowid else "_rowid_ AS __rowid, *"
            rows = [tuple(_value(v) for v in r) for r in conn.execute(f"SELECT {cols} FROM {q}")]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def schema(path: Any) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(
            conn.execute(
                "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL "
                "AND name NOT LIKE '\\_sqlrepl\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            )
        )
    finally:
        conn.close()
