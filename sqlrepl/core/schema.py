"""What a database's user schema looks like, read from a connection (apsw)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import apsw

from .sql import PREFIX, quote

ROWID_ALIASES = ("rowid", "_rowid_", "oid")


@dataclass(frozen=True)
class TableInfo:
    """A user table as capture and apply see it."""

    name: str
    #: Key columns: a rowid alias for rowid tables, the PRIMARY KEY of WITHOUT ROWID ones.
    keys: tuple[str, ...]
    #: Columns an INSERT can set (generated columns excluded), key columns not repeated.
    columns: tuple[str, ...]
    without_rowid: bool
    #: (column, collation) pairs of each secondary UNIQUE index.
    unique_indexes: tuple[tuple[tuple[str, str], ...], ...]
    #: Columns whose large values a follower can write piece by piece (incremental blob
    #: I/O): those of a rowid table that no index, CHECK constraint or stored generated
    #: column reads, so a placeholder never shows to SQLite's checks.
    streamable: tuple[str, ...] = ()

    @property
    def image_names(self) -> tuple[str, ...]:
        """Column names of a row image: keys first, then the other columns."""
        return (*self.keys, *self.columns)


@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    tbl_name: str
    sql: str


def is_internal(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith("sqlite_")


def table_kinds(conn: apsw.Connection) -> dict[str, str]:
    """Every table of the main schema: name -> 'table', 'virtual', 'shadow' or 'view'."""
    return {
        str(name): str(kind)
        for schema, name, kind, *_rest in conn.execute("PRAGMA main.table_list")
        if schema == "main"
    }


def user_tables(conn: apsw.Connection) -> list[str]:
    """Names of ordinary user tables: no virtual tables or their shadow tables (a virtual
    table's module owns those), no sqlrepl or sqlite tables."""
    kinds = table_kinds(conn)
    return sorted(n for n, k in kinds.items() if k == "table" and not is_internal(n))


#: The shadow tables an FTS5 table may have (contentless and external-content ones have fewer).
FTS5_SHADOWS = ("data", "idx", "content", "docsize", "config")


def fts5_tables(conn: apsw.Connection) -> dict[str, list[str]]:
    """FTS5 virtual tables -> their shadow tables (replicated as data, without triggers)."""
    kinds = table_kinds(conn)
    out = {}
    for name, sql in conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
    ):
        if re.search(r"\bUSING\s+fts5\b", str(sql), re.IGNORECASE):
            out[str(name)] = [f"{name}_{s}" for s in FTS5_SHADOWS if f"{name}_{s}" in kinds]
    return out


def unreplicated_virtual_tables(conn: apsw.Connection) -> list[str]:
    """Virtual tables that keep their content in shadow tables sqlrepl does not follow."""
    kinds = table_kinds(conn)
    fts5 = fts5_tables(conn)
    shadowed = {n for n, k in kinds.items() if k == "shadow"}
    return sorted(
        v
        for v, k in kinds.items()
        if k == "virtual" and v not in fts5 and any(s.startswith(v + "_") for s in shadowed)
    )


def fts5_fingerprints(
    conn: apsw.Connection, groups: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """A digest per FTS5 table that changes with every write to it: its structure record
    (segments, write counter, config cookie) and its averages record."""
    out = {}
    for name in fts5_tables(conn) if groups is None else groups:
        rows = conn.execute(
            f"SELECT id, block FROM {quote(name + '_data')} WHERE id IN (1, 10) ORDER BY id"
        ).fetchall()
        out[name] = hashlib.sha1(repr(rows).encode()).hexdigest()[:16]
    return out


def user_schema(conn: apsw.Connection) -> list[SchemaObject]:
    """Every user object with its SQL, in creation order; sqlrepl's own objects left out."""
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid"
    )
    return [SchemaObject(*row) for row in rows if not is_internal(row[1])]


def table_info(conn: apsw.Connection, table: str) -> TableInfo:
    xinfo = list(conn.execute(f"PRAGMA table_xinfo({quote(table)})"))
    # cid, name, type, notnull, dflt_value, pk, hidden
    without_rowid = _is_without_rowid(conn, table)
    insertable = [r[1] for r in xinfo if r[6] == 0]
    if without_rowid:
        keys = tuple(r[1] for r in sorted((r for r in xinfo if r[5] > 0), key=lambda r: r[5]))
    else:
        names = {r[1].lower() for r in xinfo}
        alias = _integer_primary_key(xinfo)
        if alias is None:
            alias = next((a for a in ROWID_ALIASES if a not in names), None)
        if alias is None:
            raise ValueError(f"table {table!r} hides its rowid behind columns rowid, _rowid_, oid")
        keys = (alias,)
    columns = tuple(c for c in insertable if c not in keys)
    streamable = () if without_rowid else _streamable(conn, table, xinfo, columns)
    return TableInfo(table, keys, columns, without_rowid, _unique_indexes(conn, table), streamable)


def _streamable(
    conn: apsw.Connection, table: str, xinfo: list[tuple], columns: tuple[str, ...]
) -> tuple[str, ...]:
    """The columns of a rowid table a placeholder can stand in for while a large value is
    written piece by piece (see `TableInfo.streamable`)."""
    if any(r[6] == 3 for r in xinfo):  # a stored generated column is computed on write
        return ()
    found = conn.execute(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)
    )
    sql = next((str(r[0] or "") for r in found), "")
    if re.search(r"\bCHECK\b", sql, re.IGNORECASE):
        return ()
    indexed: set[str] = set()
    for _seq, name, _unique, _origin, partial in conn.execute(f"PRAGMA index_list({quote(table)})"):
        if partial:
            return ()
        for _no, cid, column, *_rest in conn.execute(f"PRAGMA index_info({quote(str(name))})"):
            if cid < 0:  # an expression: SQLite refuses blob writes to every column then
                return ()
            indexed.add(str(column).lower())
    return tuple(c for c in columns if c.lower() not in indexed)


def _integer_primary_key(xinfo: list[tuple]) -> str | None:
    pks = [r for r in xinfo if r[5] > 0]
    if len(pks) == 1 and pks[0][2].upper() == "INTEGER":
        return str(pks[0][1])
    return None


def _is_without_rowid(conn: apsw.Connection, table: str) -> bool:
    for row in conn.execute(f"PRAGMA index_list({quote(table)})"):
        # seq, name, unique, origin, partial
        if row[3] == "pk":
            info = list(conn.execute(f"PRAGMA index_xinfo({quote(row[1])})"))
            # A WITHOUT ROWID table's PK index has no rowid column (cid -1) at the end.
            return not any(r[1] == -1 for r in info)
    return False


def _unique_indexes(conn: apsw.Connection, table: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    result = []
    for _seq, name, unique, origin, _partial in conn.execute(f"PRAGMA index_list({quote(table)})"):
        if not unique or origin == "pk":
            continue
        info: list[Any] = conn.execute(f"PRAGMA index_xinfo({quote(str(name))})").fetchall()
        # seqno, cid, name, desc, coll, key
        cols = tuple((r[2], r[4]) for r in info if r[5] and r[1] >= 0)
        if cols and all(r[1] >= 0 for r in info if r[5]):
            result.append(cols)
    return tuple(result)
