"""Consistent snapshots: take one, stamp it with its position, verify it, put it in place."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import apsw

from .apply import install_guards
from .capture import head
from .db import Position, connect, read_meta, transaction, use_wal, write_meta
from .errors import DatabaseError
from .sql import FOLLOWERS, LOG, PREFIX, like_prefix, quote

Progress = Callable[[int, int], None]
READ_SIZE = 1 << 20


def take(conn: apsw.Connection, dest: Path) -> Position:
    """Copy `conn`'s database to `dest` (a new file) in one step; return the position it equals.

    The copy is a self-contained rollback-journal file stamped with its position.
    """
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
        copy.execute("PRAGMA journal_mode=DELETE")
        where = stamped_position(copy)
        with transaction(copy):
            write_meta(
                copy, snapshot_epoch=where.epoch, snapshot_seq=where.seq, snapshot_at=time.time()
            )
        return where
    finally:
        copy.close()


def stamped_position(conn: apsw.Connection) -> Position:
    """The position a copied file equals: a leader's log head, or what a follower applied."""
    meta = read_meta(conn)
    if "cluster" not in meta:
        raise DatabaseError(f"{conn.filename} is not managed by sqlrepl (no cluster identity)")
    if meta.get("role") == "follower":
        return Position(int(meta["epoch"]), int(meta["seq"]))
    return Position(int(meta["epoch"]), head(conn))


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


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while block := f.read(READ_SIZE):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def make_follower(path: Path, leader: str, node: str) -> Position:
    """Turn a verified snapshot file into a follower file; return its position."""
    conn = connect(path)
    try:
        where = stamped_position(conn)
        with transaction(conn):
            meta = read_meta(conn)
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
                (like_prefix(PREFIX),),
            ).fetchall():
                conn.execute(f"DROP TRIGGER {quote(str(name))}")
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
            install_guards(conn, leader)
        use_wal(conn)
        return where
    finally:
        conn.close()


def durable(path: Path) -> None:
    """Flush `path` and its directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
