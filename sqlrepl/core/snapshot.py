"""Consistent snapshots: take one, stamp it with its position, verify it, put it in place."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import apsw

from ..errors import DatabaseError, ProtocolError
from . import gate
from .db import (
    connect,
    drop_triggers,
    ensure_position_view,
    read_meta,
    transaction,
    use_wal,
    write_meta,
)
from .positions import SNAPSHOT, Position, read_position
from .sql import FOLLOWERS, LOG, META, PREFIX, create_internal_tables

Progress = Callable[[int, int], None]
READ_SIZE = 1 << 20


def take(conn: apsw.Connection, dest: Path, now: float) -> Position:
    """Copy `conn`'s database to `dest` (a new file) through the backup API, stamped with
    its position. For copies made in-process (a follower keeping its forked content)."""
    if dest.exists():
        raise DatabaseError(f"{dest} already exists")
    copy = connect(dest, create=True)
    try:
        # A new file that nobody reads until it is whole: no journal and no syncs while it
        # is filled (3.5x faster); callers that keep it call `durable` before renaming it.
        copy.execute("PRAGMA journal_mode=OFF")
        copy.execute("PRAGMA synchronous=OFF")
        with copy.backup("main", conn, "main") as backup:
            backup.step(-1)
    finally:
        copy.close()
    return stamp(dest, now)


def stamp(path: Path, now: float, source: str | None = None) -> Position:
    """Mark the copy at `path` as a snapshot of its position, made at `now` (from
    `source`): a self-contained rollback-journal file that `restore` can describe."""
    copy = connect(path)
    try:
        copy.execute("PRAGMA journal_mode=DELETE")
        with transaction(copy):
            where = read_position(copy)
            meta = read_meta(copy)
            values = {
                "role": SNAPSHOT,
                "snapshot_of": meta.get("role"),
                "snapshot_node": meta.get("node"),
                "snapshot_epoch": where.epoch,
                "snapshot_seq": where.seq,
                "snapshot_at": now,
            }
            if source:
                values["snapshot_source"] = source
            write_meta(copy, **values)
        return where
    finally:
        copy.close()


def verify(path: Path) -> None:
    """Raise DatabaseError unless `path` is an intact SQLite database."""
    conn = connect(path, readonly=True)
    try:
        result = conn.execute("PRAGMA quick_check").fetchall()
    except apsw.Error as exc:
        raise DatabaseError(f"{path} failed its integrity check: {exc}") from exc
    finally:
        conn.close()
    if result != [("ok",)]:
        raise DatabaseError(f"{path} failed its integrity check: {result[:3]}")


def make_follower(path: Path, leader: str, node: str) -> Position:
    """Turn a verified snapshot file into a follower file; return its position."""
    conn = connect(path)
    try:
        with transaction(conn):
            meta = read_meta(conn)
            if not meta.get("cluster"):
                raise ProtocolError(
                    f"{path.name} lacks sqlrepl's tables (an app dropped them on the leader "
                    "as it was taken?): a new one is asked for"
                )
            conn.execute(create_internal_tables())  # only what an app dropped
            where = read_position(conn)
            drop_triggers(conn, PREFIX)
            conn.execute(f"DELETE FROM {META} WHERE key LIKE 'snapshot\\_%' ESCAPE '\\'")
            conn.execute(f"DELETE FROM {LOG}")
            conn.execute(f"DELETE FROM {FOLLOWERS}")
            write_meta(
                conn,
                role="follower",
                cluster=meta["cluster"],
                epoch=where.epoch,
                seq=where.seq,
                leader=leader,
                node=node,
            )
            gate.install(conn, gate.follower_message(leader))
            ensure_position_view(conn)
        use_wal(conn)
        return where
    finally:
        conn.close()


def replace_live(src: Path, dest: Path) -> None:
    """Overwrite the live database `dest` with `src` through the backup API.

    Readers of `dest` see either the old content or the new, never a mix, and its
    WAL and shared-memory files stay consistent (unlike a rename over a live file).
    """
    source = connect(src, readonly=True)
    target = connect(dest)
    try:
        with target.backup("main", source, "main") as backup:
            backup.step(-1)
    finally:
        source.close()
        target.close()


def place(src: Path, dest: Path) -> None:
    """Put a verified file at `dest`: a rename if there is none yet, else a live replace."""
    if dest.exists() and dest.stat().st_size > 0:
        replace_live(src, dest)
        src.unlink()
    else:
        for suffix in ("-wal", "-shm", "-journal"):
            Path(str(dest) + suffix).unlink(missing_ok=True)
        os.replace(src, dest)
