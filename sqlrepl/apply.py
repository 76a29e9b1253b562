"""Replay on a follower: one batch, one SQLite transaction, together with the position.

The applier's connection runs with triggers and foreign keys switched off: the app's own
triggers and FK actions already ran on the leader and their effects arrive as captured
changes; the guard triggers that keep apps from writing to the follower do not apply to it.
"""

from __future__ import annotations

from typing import Any

import apsw

from .db import Position, read_meta, write_meta
from .errors import DatabaseError, ProtocolError, StaleEpochError
from .schema import SchemaObject, user_schema, user_tables
from .sql import delete_key, guard_triggers, insert_row, quote
from .wire import FrameReader

DROP_ORDER = {"trigger": 0, "view": 1, "index": 2, "table": 3}


def applier_connection(conn: apsw.Connection) -> apsw.Connection:
    """Switch off triggers and foreign keys for replay on `conn`."""
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_FKEY, 0)
    return conn


def guard_message(leader: str) -> str:
    return f"sqlrepl: this database is a read-only follower; write to the leader at {leader}"


def install_guards(conn: apsw.Connection, leader: str, tables: list[str] | None = None) -> None:
    """(Re)create the triggers that refuse app writes, naming the leader."""
    for table in user_tables(conn) if tables is None else tables:
        for stmt in guard_triggers(table, guard_message(leader)):
            conn.execute(stmt)


def follower_position(conn: apsw.Connection) -> Position:
    meta = read_meta(conn)
    if meta.get("role") != "follower":
        raise DatabaseError(f"{conn.filename} is not a sqlrepl follower")
    return Position(int(meta["epoch"]), int(meta["seq"]))


class Applier:
    """Applies one batch stream, fed in pieces; nothing is visible until `finish` commits."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.reader = FrameReader()
        self.header: dict[str, Any] | None = None
        self.tables: dict[int, list[Any]] = {}
        self.rows = 0

    def feed(self, data: bytes) -> None:
        try:
            for frame in self.reader.feed(data):
                self._frame(frame)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> Position:
        """Check the stream was whole, record the position, commit."""
        try:
            self.reader.close()
            assert self.header is not None
            new = Position(int(self.header["epoch"]), int(self.header["head"]))
            write_meta(self.conn, epoch=new.epoch, seq=new.seq)
            self.conn.execute("COMMIT")
            return new
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _frame(self, frame: Any) -> None:
        if self.header is None:
            self._begin(frame)
            return
        if self.reader.ended:
            return
        if not isinstance(frame, tuple) or len(frame) < 2 or frame[1] not in self.tables:
            raise ProtocolError(f"unexpected batch frame {str(frame)[:80]}")
        kind, tid = frame[0], frame[1]
        name, keys, columns, replace = self.tables[tid]
        if kind == "clear":
            self.conn.execute(f"DELETE FROM {quote(name)}")
        elif kind == "del":
            self.conn.executemany(delete_key(name, keys), frame[2])
        elif kind == "put":
            self.conn.executemany(insert_row(name, [*keys, *columns], replace), frame[2])
            self.rows += len(frame[2])
        else:
            raise ProtocolError(f"unknown batch frame kind {kind!r}")

    def _begin(self, header: Any) -> None:
        if not isinstance(header, dict) or header.get("v") != 1:
            raise ProtocolError("batch does not start with a version 1 header")
        self.conn.execute("BEGIN IMMEDIATE")
        meta = read_meta(self.conn)
        if header["cluster"] != meta.get("cluster"):
            raise DatabaseError(
                f"batch is from cluster {header['cluster']}, "
                f"this follower belongs to {meta.get('cluster')}"
            )
        if int(header["epoch"]) < int(meta["epoch"]):
            raise StaleEpochError(
                f"batch from epoch {header['epoch']} refused: "
                f"already accepted epoch {meta['epoch']}"
            )
        if int(header["after"]) != int(meta["seq"]):
            raise ProtocolError(
                f"batch starts at seq {header['after']}, follower is at {meta['seq']}"
            )
        self.header = header
        self.tables = {int(tid): desc for tid, desc in header["tables"].items()}
        if header["schema"] is not None:
            created = apply_schema(self.conn, [SchemaObject(*o) for o in header["schema"]])
            install_guards(self.conn, str(meta.get("leader")), created)


def apply_schema(conn: apsw.Connection, desired: list[SchemaObject]) -> list[str]:
    """Make the user schema equal `desired`; return the tables (re)created."""
    have = {(o.type, o.name): o for o in user_schema(conn)}
    want = {(o.type, o.name): o for o in desired}
    stale = [o for k, o in have.items() if k not in want or want[k].sql != o.sql]
    for obj in sorted(stale, key=lambda o: DROP_ORDER.get(o.type, 9)):
        conn.execute(f"DROP {obj.type.upper()} IF EXISTS {quote(obj.name)}")
    current = {(o.type, o.name) for o in user_schema(conn)}
    created = []
    for obj in desired:
        if (obj.type, obj.name) not in current:
            conn.execute(obj.sql)
            if obj.type == "table":
                created.append(obj.name)
    return created


def apply_stream(conn: apsw.Connection, data: bytes) -> Position:
    """Apply a whole batch held in memory (tests and small batches)."""
    applier = Applier(conn)
    applier.feed(data)
    return applier.finish()


__all__ = [
    "Applier",
    "applier_connection",
    "apply_schema",
    "apply_stream",
    "follower_position",
    "install_guards",
]
