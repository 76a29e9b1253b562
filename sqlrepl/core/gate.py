"""The write gate: guard triggers that refuse every app write to a file, with a message.

A follower's gate is always closed, naming its leader; a leader closes its own when it is
demoted, hands over, or may have lost its lease. The applier's connection runs with
triggers switched off, so replay passes the gate; apps cannot. Whether the gate is open
is a fact of the file (are there guard triggers?), never a belief of the daemon.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import apsw

from . import capture
from .db import drop_triggers, schema_version, transaction, write_meta
from .schema import user_tables
from .sql import GUARD_PREFIX, guard_triggers, like_prefix, literal


def follower_message(leader: str) -> str:
    return f"sqlrepl: this database is a read-only follower; write to the leader at {leader}"


def refused_message(reason: str) -> str:
    return f"sqlrepl: writes refused: {reason}"


def is_open(conn: apsw.Connection) -> bool:
    """Can apps write? (No guard trigger on any user table.)"""
    rows = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
        (like_prefix(GUARD_PREFIX),),
    ).fetchall()
    return bool(rows[0][0] == 0)


def install(conn: apsw.Connection, message: str, tables: list[str] | None = None) -> None:
    """(Re)create the guards on `tables` (default: every user table), inside the caller's
    transaction."""
    for table in user_tables(conn) if tables is None else tables:
        for stmt in guard_triggers(table, message):
            conn.execute(stmt)


def close(conn: apsw.Connection, reason: str) -> None:
    """Refuse every app write from now on, with an error naming `reason`."""
    with transaction(conn), _in_step(conn):
        install(conn, refused_message(reason))


def open_(conn: apsw.Connection) -> None:
    """Let apps write again (a leader starting, or a switchover that did not happen)."""
    with transaction(conn), _in_step(conn):
        remove(conn)


@contextlib.contextmanager
def _in_step(conn: apsw.Connection) -> Iterator[None]:
    """The gate's triggers change the schema, not the app's: a leader file whose capture
    was in step with the schema stays so (one commit, and nothing for capture to catch up
    with later)."""
    was = capture.in_step(conn)
    yield
    if was:
        write_meta(conn, schema_version=schema_version(conn))


def remove(conn: apsw.Connection) -> None:
    """Drop every guard, inside the caller's transaction."""
    drop_triggers(conn, GUARD_PREFIX)


def unguarded_tables(conn: apsw.Connection) -> list[str]:
    """User tables (FTS shadow tables included) that have no write guard yet."""
    guarded = {
        str(t)
        for (t,) in conn.execute(
            "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = "
            f"{literal(GUARD_PREFIX)} || 'i_' || tbl_name"
        )
    }
    return [t for t in user_tables(conn) if t not in guarded]
