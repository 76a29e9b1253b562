"""Opening sqlrepl's SQLite files, transactions, and the meta table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from ..config import BUSY_TIMEOUT_MS
from ..errors import DatabaseError
from .sql import META, POSITION_VIEW, create_position_view, like_prefix, quote


def connect(
    path: str | os.PathLike[str], *, readonly: bool = False, create: bool = False
) -> apsw.Connection:
    """Open `path` with apsw and check that it is a SQLite database."""
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    if create:
        flags |= apsw.SQLITE_OPEN_CREATE
    try:
        conn = apsw.Connection(os.fspath(path), flags=flags)
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except apsw.CantOpenError as exc:
        raise DatabaseError(f"cannot open {path}: {exc}") from exc
    except apsw.NotADBError as exc:
        raise DatabaseError(f"{path} is not a SQLite database") from exc
    return conn


def scalar(conn: apsw.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of `sql`."""
    return conn.execute(sql, params).fetchall()[0][0]


def use_wal(conn: apsw.Connection) -> None:
    mode = str(scalar(conn, "PRAGMA journal_mode=WAL"))
    if mode.lower() != "wal":
        raise DatabaseError(f"{conn.filename}: cannot switch to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=NORMAL")


@contextmanager
def transaction(conn: apsw.Connection, mode: str = "IMMEDIATE") -> Iterator[apsw.Connection]:
    """BEGIN `mode` … COMMIT, or ROLLBACK if the block raises."""
    conn.execute(f"BEGIN {mode}")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def has_table(conn: apsw.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None


def has_view(conn: apsw.Connection, name: str = POSITION_VIEW) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type='view' AND name=?", (name,))
    return row.fetchone() is not None


def ensure_position_view(conn: apsw.Connection) -> None:
    """Create the position view in a file that lacks it (one made by an older version)."""
    if not has_view(conn):
        conn.execute(create_position_view())


def read_meta(conn: apsw.Connection) -> dict[str, Any]:
    if not has_table(conn, META):
        return {}
    return dict(conn.execute(f"SELECT key, value FROM {quote(META)}"))


def write_meta(conn: apsw.Connection, **values: Any) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO {quote(META)}(key, value) VALUES(?, ?)", list(values.items())
    )


def schema_version(conn: apsw.Connection) -> int:
    return int(scalar(conn, "PRAGMA schema_version"))


def durable(path: str | os.PathLike[str]) -> None:
    """Flush the file at `path` and its directory entry to disk."""
    for target in (os.fspath(path), os.path.dirname(os.path.abspath(path))):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_triggers(conn: apsw.Connection, prefix: str) -> None:
    """Drop every trigger whose name starts with `prefix` (sqlrepl's own: capture, guards)."""
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
        (like_prefix(prefix),),
    ).fetchall():
        conn.execute(f"DROP TRIGGER {quote(str(name))}")
