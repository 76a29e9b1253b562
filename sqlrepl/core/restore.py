"""Making a writable database from a snapshot or a follower's copy.

By default the result is a plain SQLite file: every trace of sqlrepl removed, so the
leader started on it founds a new cluster (its followers from the old cluster refuse it).
As the leader of the old cluster instead, it begins a new epoch at the snapshot's
position: followers that went further on the old timeline see the fork, save their
content and resync, instead of silently holding rows the restored leader lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw

from ..errors import DatabaseError
from . import roles, snapshot
from .db import connect, drop_triggers, read_meta, transaction
from .positions import SNAPSHOT, Position, read_position
from .sql import POSITION_VIEW, PREFIX, like_prefix, quote


def describe(conn: apsw.Connection) -> dict[str, Any]:
    """What a snapshot or follower copy is: cluster, position, when, of what."""
    meta = read_meta(conn)
    if meta.get("role") not in (SNAPSHOT, "follower"):
        raise DatabaseError(
            f"{conn.filename} is not a sqlrepl snapshot or follower copy "
            f"(role {meta.get('role')}); nothing to restore"
        )
    where = read_position(conn)
    return {
        "cluster": meta.get("cluster"),
        "epoch": where.epoch,
        "seq": where.seq,
        "of": meta.get("snapshot_of") or meta.get("role"),
        "node": meta.get("snapshot_node") or meta.get("node"),
        "at": meta.get("snapshot_at"),
        "source": meta.get("snapshot_source"),
    }


def make_plain(conn: apsw.Connection) -> None:
    """Remove sqlrepl from the file: its triggers and its tables."""
    with transaction(conn):
        drop_triggers(conn, PREFIX)
        conn.execute(f"DROP VIEW IF EXISTS {quote(POSITION_VIEW)}")
        names = conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
            (like_prefix(PREFIX),),
        ).fetchall()
        for (name,) in names:
            conn.execute(f"DROP TABLE {quote(str(name))}")


def make_leader(path: Path, epoch: int | None, why: str, now: float) -> Position:
    """Turn the copy at `path` into the leader of its cluster on a new epoch (above the
    copy's, and at least `epoch`), beginning at the copy's position."""
    conn = connect(path)
    try:
        start = read_position(conn)
    finally:
        conn.close()
    snapshot.make_follower(path, "", "")
    new = max(start.epoch + 1, epoch or 0)
    conn = connect(path)
    try:
        return roles.promote(conn, "restored", "", why, now, new)
    finally:
        conn.close()
