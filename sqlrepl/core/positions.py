"""Where a node stands, read from its own file: the one home of that question.

A position is `(epoch, seq)`: the newest epoch the file accepted, and its newest change —
a leader's log head, or the last batch a follower applied (stored with the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from ..errors import DatabaseError
from .db import read_meta, scalar, transaction
from .sql import LOG

#: The role recorded in a snapshot copy: not a leader or follower until restored or
#: turned into a follower.
SNAPSHOT = "snapshot"


@dataclass(frozen=True, order=True)
class Position:
    """Where a node is: the epoch it accepted and the last change it holds."""

    epoch: int
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}/{self.seq}"


def log_head(conn: apsw.Connection) -> int:
    """The newest seq in a leader's change log (0 for an empty log)."""
    return int(scalar(conn, f"SELECT coalesce(max(seq), 0) FROM {LOG}"))


def trimmed(conn: apsw.Connection, meta: dict[str, Any] | None = None) -> int:
    """The newest seq a leader's log no longer holds the changes up to: a follower at or
    after it can be served from the log. The log is bounded in the capture path (its
    oldest entry moves up with every write) and starts over at a promotion (`trimmed`
    in meta)."""
    oldest = int(scalar(conn, f"SELECT coalesce(min(seq), 1) FROM {LOG}"))
    meta = read_meta(conn) if meta is None else meta
    return max(int(meta.get("trimmed", 0)), oldest - 1)


def read_position(conn: apsw.Connection) -> Position:
    """The position of a sqlrepl file of either role (call inside a transaction for a
    consistent answer, or use `current_position`)."""
    meta = read_meta(conn)
    if "cluster" not in meta:
        raise DatabaseError(f"{conn.filename} is not managed by sqlrepl (no cluster identity)")
    if meta.get("role") == "follower":
        return Position(int(meta["epoch"]), int(meta["seq"]))
    if meta.get("role") == SNAPSHOT:
        return Position(int(meta["snapshot_epoch"]), int(meta["snapshot_seq"]))
    return Position(int(meta["epoch"]), log_head(conn))


def current_position(conn: apsw.Connection) -> Position:
    """`read_position` in a read transaction of its own."""
    with transaction(conn, "DEFERRED"):
        return read_position(conn)


def follower_position(conn: apsw.Connection) -> Position:
    """A follower file's position; refuses a file of any other role."""
    meta = read_meta(conn)
    if meta.get("role") != "follower":
        raise DatabaseError(f"{conn.filename} is not a sqlrepl follower")
    return Position(int(meta["epoch"]), int(meta["seq"]))


def refuse_to_lead(path: str, meta: dict[str, Any]) -> None:
    """Raise unless a file with this meta may be made a leader here."""
    if meta.get("role") == "follower":
        raise DatabaseError(
            f"{path} is a follower of {meta.get('leader')}; "
            "promote it instead of starting a leader on it"
        )
    if meta.get("role") == SNAPSHOT:
        raise DatabaseError(
            f"{path} is a snapshot of cluster {meta.get('cluster')} at "
            f"{meta.get('snapshot_epoch')}/{meta.get('snapshot_seq')}; make a writable "
            "database of it with `sqlrepl restore`"
        )
