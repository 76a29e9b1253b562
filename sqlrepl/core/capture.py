"""Capture on the leader: the change log, its triggers, and keeping them in step with the schema.

Triggers log only the key of each touched row (`tid`, `k0`…); a row whose key is NULL
in the log is a marker: the whole table (or, with tid 0, the schema) must be resent.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import apsw

from ..config import DEFAULT_LOG_LIMIT
from .db import has_table, has_view, read_meta, scalar, schema_version, transaction, write_meta
from .positions import Position, current_position, refuse_to_lead
from .schema import (
    ROWID_ALIASES,
    TableInfo,
    fts5_tables,
    table_info,
    unreplicated_virtual_tables,
    user_schema,
    user_tables,
)
from .sql import (
    CAPTURE_PREFIX,
    LOG,
    META,
    RETAIN_TRIGGER,
    TABLES,
    capture_trigger_name,
    capture_triggers,
    create_internal_tables,
    key_columns,
    like_prefix,
    quote,
    retention_trigger,
)

SCHEMA_TID = 0
#: The `capture` of a table that has no triggers: an FTS5 shadow table.
SHADOW = "shadow"


def install(
    conn: apsw.Connection, *, resend_new: bool = True, log_limit: int = DEFAULT_LOG_LIMIT
) -> Position:
    """Make `conn`'s file a leader: internal tables, identity, capture on every table,
    the log bounded to `log_limit` entries.

    Idempotent, and writes nothing when all of it is in place already (a restart while
    apps write must not need the write lock). Refuses a file that is a follower. With
    `resend_new=False` (a promoted follower, whose followers already hold every row) new
    tables are not marked for a full resend.
    """
    if not installed(conn, log_limit):
        with transaction(conn):
            install_within(conn, resend_new, log_limit)
    return current_position(conn)


def installed(conn: apsw.Connection, log_limit: int = DEFAULT_LOG_LIMIT) -> bool:
    """Is capture in place and in step with the schema, with this log bound? (Reads only.)"""
    with transaction(conn, "DEFERRED"):
        if not has_table(conn, META) or not has_table(conn, LOG) or not has_view(conn):
            return False
        meta = read_meta(conn)
        return (
            meta.get("role") == "leader"
            and "cluster" in meta
            and schema_version(conn) == meta.get("schema_version")
            and _retention_sql(conn) == retention_trigger(log_limit)
        )


def install_within(
    conn: apsw.Connection, resend_new: bool = True, log_limit: int = DEFAULT_LOG_LIMIT
) -> None:
    """`install`, inside the caller's transaction (a promotion opens the gate and installs
    capture in one transaction: no app write can commit in between, uncaptured)."""
    meta = read_meta(conn)
    refuse_to_lead(conn.filename, meta)
    conn.execute(create_internal_tables())
    if "cluster" not in meta:
        write_meta(conn, cluster=uuid.uuid4().hex, epoch=1, role="leader", trimmed=0)
    if _retention_sql(conn) != retention_trigger(log_limit):
        conn.execute(f"DROP TRIGGER IF EXISTS {RETAIN_TRIGGER}")
        conn.execute(retention_trigger(log_limit))
    _sync(conn, resend_new)


def _retention_sql(conn: apsw.Connection) -> str | None:
    found = conn.execute(
        "SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?", (RETAIN_TRIGGER,)
    ).fetchall()
    return str(found[0][0]) if found else None


def in_step(conn: apsw.Connection) -> bool | None:
    """Is a leader file's capture in step with its schema? None for any other file.
    (Reads only.)"""
    meta = read_meta(conn)
    if meta.get("role") != "leader":
        return None
    return schema_version(conn) == meta.get("schema_version")


def schema_moved(conn: apsw.Connection) -> bool:
    """Has a leader file's schema changed since capture was last brought in step?"""
    return in_step(conn) is False


def sync_capture(conn: apsw.Connection) -> bool:
    """Bring capture in step with the schema if it changed. True if it did anything
    (never on a file that is no longer a leader's)."""
    if not schema_moved(conn):
        return False
    with transaction(conn):
        return _sync(conn)


def _sync(conn: apsw.Connection, resend_new: bool = True) -> bool:
    meta = read_meta(conn)
    if meta.get("role") != "leader":
        return False  # a demoted leader's file: capture must not come back
    if schema_version(conn) == meta.get("schema_version"):
        return False
    digest = schema_digest(conn)
    vacuumed = digest == meta.get("schema_hash")
    recorded = {
        row[1]: row for row in conn.execute(f"SELECT tid, name, sql, capture FROM {TABLES}")
    }
    shadows = [s for group in fts5_tables(conn).values() for s in group]
    problems = [
        f"virtual table {v!r} is not replicated: sqlrepl follows the content of FTS5 tables only"
        for v in unreplicated_virtual_tables(conn)
    ]
    current = user_tables(conn)
    for name, (tid, *_rest) in recorded.items():
        if name not in current and name not in shadows:
            conn.execute(f"DELETE FROM {TABLES} WHERE tid = ?", (tid,))
            _mark(conn, tid)
    for name in current:
        try:
            _sync_table(conn, name, recorded.get(name), vacuumed, resend_new)
        except ValueError as exc:
            problems.append(f"table {name!r} is not replicated: {exc}")
    for name in shadows:
        _sync_shadow(conn, name, recorded.get(name), resend_new)
    _drop_strays(conn)
    if digest != meta.get("schema_hash"):
        _mark(conn, SCHEMA_TID)
    write_meta(
        conn,
        schema_version=schema_version(conn),
        schema_hash=digest,
        problems=json.dumps(problems),
    )
    return True


def problems(conn: apsw.Connection) -> list[str]:
    """What the last capture sync could not replicate (reported in the log and in status)."""
    return list(json.loads(read_meta(conn).get("problems") or "[]"))


def _sync_table(
    conn: apsw.Connection, name: str, recorded: tuple | None, vacuumed: bool, resend_new: bool
) -> None:
    """Install or refresh capture on one table; mark it for a full resend when needed."""
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (name,)).fetchall()[0][0]
    info = table_info(conn, name)
    signature = repr((info.keys, info.unique_indexes))
    if recorded is None:
        tid = _next_tid(conn)
        conn.execute(
            f"INSERT INTO {TABLES}(tid, name, sql, capture) VALUES(?, ?, ?, ?)",
            (tid, name, sql, signature),
        )
        _install_triggers(conn, tid, info)
        if resend_new:
            _mark(conn, tid)
        return
    tid, _name, old_sql, old_signature = recorded
    intact = _has_triggers(conn, tid, name)
    if not intact or old_signature != signature:
        _install_triggers(conn, tid, info)
    if not intact or old_sql != sql or (vacuumed and not _stable_rowids(info)):
        _mark(conn, tid)
    conn.execute(f"UPDATE {TABLES} SET sql = ?, capture = ? WHERE tid = ?", (sql, signature, tid))


def _sync_shadow(
    conn: apsw.Connection, name: str, recorded: tuple | None, resend_new: bool
) -> None:
    """An FTS5 shadow table: no triggers (SQLite can crash when its module writes through
    them), resent whole when the FTS5 table changes; see batch.build."""
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (name,)).fetchall()[0][0]
    if recorded is None:
        tid = _next_tid(conn)
        conn.execute(
            f"INSERT INTO {TABLES}(tid, name, sql, capture) VALUES(?, ?, ?, ?)",
            (tid, name, sql, SHADOW),
        )
        if resend_new:
            _mark(conn, tid)
        return
    tid, _name, old_sql, old_capture = recorded
    if old_sql != sql or old_capture != SHADOW:
        conn.execute(f"UPDATE {TABLES} SET sql = ?, capture = ? WHERE tid = ?", (sql, SHADOW, tid))
        _mark(conn, tid)


def _stable_rowids(info: TableInfo) -> bool:
    """VACUUM keeps the rowids only of tables whose key is a declared column."""
    return info.without_rowid or info.keys[0] not in ROWID_ALIASES


def schema_digest(conn: apsw.Connection) -> str:
    text = "\x00".join(f"{o.type}\x01{o.name}\x01{o.sql}" for o in user_schema(conn))
    return hashlib.sha256(text.encode()).hexdigest()


def _next_tid(conn: apsw.Connection) -> int:
    """A table id never used before in this file: old log rows can't be misread as a new table's."""
    meta = read_meta(conn)
    if "next_tid" in meta:
        tid = int(meta["next_tid"])
    else:  # files from before next_tid: look at everything ever logged (once)
        tid = 1 + int(
            scalar(
                conn,
                f"SELECT max(coalesce((SELECT max(tid) FROM {TABLES}), 0), "
                f"coalesce((SELECT max(tid) FROM {LOG}), 0))",
            )
        )
    write_meta(conn, next_tid=tid + 1)
    return tid


def _has_triggers(conn: apsw.Connection, tid: int, table: str) -> bool:
    """Are `tid`'s capture triggers in place, on `table` (a rename carries triggers along)?"""
    row = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name IN (?, ?, ?) "
        "AND tbl_name = ?",
        (*(capture_trigger_name(op, tid) for op in "iud"), table),
    ).fetchall()
    return bool(row[0][0] == 3)


def _drop_strays(conn: apsw.Connection) -> None:
    """Drop capture triggers of tables that are gone, or that a rename left on another table."""
    owners = {
        int(tid): str(name)
        for tid, name in conn.execute(
            f"SELECT tid, name FROM {TABLES} WHERE capture != ?", (SHADOW,)
        )
    }
    triggers = conn.execute(
        "SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger' "
        "AND name LIKE ? ESCAPE '\\'",
        (like_prefix(CAPTURE_PREFIX),),
    ).fetchall()
    for name, table in triggers:
        tid = int(str(name).rsplit("_", 1)[1])
        if owners.get(tid) != table:
            conn.execute(f"DROP TRIGGER {quote(str(name))}")


def _install_triggers(conn: apsw.Connection, tid: int, info: TableInfo) -> None:
    for op in "iudrs":
        conn.execute(f"DROP TRIGGER IF EXISTS {quote(capture_trigger_name(op, tid))}")
    _ensure_log_width(conn, len(info.keys))
    for stmt in capture_triggers(info.name, tid, info.keys, info.unique_indexes):
        conn.execute(stmt)


def _ensure_log_width(conn: apsw.Connection, width: int) -> None:
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({LOG})")}
    for column in key_columns(width):
        if column not in have:
            conn.execute(f"ALTER TABLE {LOG} ADD COLUMN {column}")


def _mark(conn: apsw.Connection, tid: int) -> None:
    conn.execute(f"INSERT INTO {LOG}(tid, k0) VALUES(?, NULL)", (tid,))
