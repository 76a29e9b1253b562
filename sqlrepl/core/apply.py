"""Replay on a follower: one batch, one SQLite transaction, together with the position.

The applier's connection runs with triggers and foreign keys switched off: the app's own
triggers and FK actions already ran on the leader and their effects arrive as captured
changes; the guard triggers that keep apps from writing to the follower do not apply to it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import apsw

from ..errors import ApplyError, DatabaseError, ProtocolError, StaleEpochError, StorageError
from . import gate
from .db import read_meta, transaction, write_meta
from .positions import Position, follower_position
from .schema import SchemaObject, user_schema
from .sql import delete_key, insert_row, quote
from .wire import FrameReader, Header, TableShape

DROP_ORDER = {"trigger": 0, "view": 1, "index": 2, "table": 3}
#: SQLite's errors that say the disk failed (full, read-only, I/O), not the batch.
STORAGE_ERRORS = (apsw.FullError, apsw.IOError, apsw.ReadOnlyError, apsw.CantOpenError)


def applier_connection(conn: apsw.Connection) -> apsw.Connection:
    """Switch off triggers and foreign keys for replay on `conn`."""
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_FKEY, 0)
    return conn


def adopt_epoch(conn: apsw.Connection, epoch: int) -> Position:
    """Accept a newer epoch at the current seq (its leader has nothing newer to send)."""
    with transaction(conn):
        where = follower_position(conn)
        if epoch > where.epoch:
            write_meta(conn, epoch=epoch)
            where = Position(epoch, where.seq)
        return where


class Applier:
    """Applies one batch stream, fed in pieces; nothing is visible until `finish` commits."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.reader = FrameReader()
        self.header: Header | None = None
        self.rows = 0
        self.leader = ""
        self.schema: list[SchemaObject] | None = None
        #: The large value being written piece by piece (`fill` frames), and where its
        #: next piece goes.
        self._blob: apsw.Blob | None = None
        self._filled = 0

    def feed(self, data: bytes) -> None:
        with self._or_abort():
            for frame in self.reader.feed(data):
                self._frame(frame)

    @contextlib.contextmanager
    def _or_abort(self) -> Iterator[None]:
        """Any failure rolls the whole batch back; SQLite's own become ApplyError."""
        try:
            yield
        except STORAGE_ERRORS as exc:
            self.abort()  # the disk, not the batch: never a reason to give the batch up
            raise StorageError(f"cannot write to {self.conn.filename}: {exc}") from exc
        except apsw.Error as exc:
            self.abort()
            raise ApplyError(f"batch could not be applied: {exc}") from exc
        except BaseException:
            self.abort()
            raise

    def finish(self) -> Position:
        """Check the stream was whole, record the position, commit."""
        with self._or_abort():
            self.reader.close()
            if self._blob is not None:
                raise ProtocolError("a large value ended before all of its pieces arrived")
            assert self.header is not None
            new = Position(self.header.epoch, self.header.head)
            if self.schema is not None:
                schema_after_rows(self.conn, self.schema)
                message = gate.follower_message(self.leader)
                gate.install(self.conn, message, gate.unguarded_tables(self.conn))
            apply_sequences(self.conn, self.header.sequences)
            if self.header.history:
                write_meta(self.conn, history=json.dumps(self.header.history))
            write_meta(self.conn, epoch=new.epoch, seq=new.seq)
            self.conn.execute("COMMIT")
            return new

    def abort(self) -> None:
        self._close_blob()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @property
    def tables(self) -> dict[int, TableShape]:
        return self.header.tables if self.header is not None else {}

    def _frame(self, frame: Any) -> None:
        if self.header is None:
            self._begin(Header.from_wire(frame))
            return
        if self.reader.ended:
            return
        if not isinstance(frame, tuple) or len(frame) < 2 or frame[1] not in self.tables:
            raise ProtocolError(f"unexpected batch frame {str(frame)[:80]}")
        kind, table = frame[0], self.tables[frame[1]]
        if self._blob is not None and kind != "fill":
            raise ProtocolError("a large value ended before all of its pieces arrived")
        if kind == "clear":
            self.conn.execute(f"DELETE FROM {quote(table.name)}")
        elif kind == "del":
            self.conn.executemany(delete_key(table.name, table.keys), frame[2])
        elif kind == "put":
            names = [*table.keys, *table.columns]
            self.conn.executemany(insert_row(table.name, names, table.replace), frame[2])
            self.rows += len(frame[2])
        elif kind == "fill":
            self._fill(table, *frame[2:])
        else:
            raise ProtocolError(f"unknown batch frame kind {kind!r}")

    def _fill(
        self,
        table: TableShape,
        rowid: int,
        at: int,
        offset: int,
        size: int,
        text: bool,
        data: bytes,
    ) -> None:
        """Write a piece of a large value into the row its `put` left a placeholder in."""
        column = (*table.keys, *table.columns)[at]
        if offset == 0 and self._blob is None:
            # A placeholder of the value's size and type, then its bytes in place (a TEXT
            # placeholder is made whole by SQLite's CAST: one copy, in SQLite's memory).
            value = "CAST(zeroblob(?) AS TEXT)" if text else "zeroblob(?)"
            self.conn.execute(
                f"UPDATE {quote(table.name)} SET {quote(column)} = {value} "
                f"WHERE {quote(table.keys[0])} = ?",
                (size, rowid),
            )
            if self.conn.changes() != 1:
                raise ProtocolError(f"a large value for a row {table.name} lacks (rowid {rowid})")
            self._blob, self._filled = (
                self.conn.blob_open("main", table.name, column, rowid, True),
                0,
            )
        if self._blob is None or offset != self._filled or offset + len(data) > size:
            raise ProtocolError(f"a piece of a large value in {table.name} is out of order")
        self._blob.write(data)
        self._filled += len(data)
        if self._filled == size:
            self._close_blob()

    def _close_blob(self) -> None:
        if self._blob is not None:
            self._blob.close()
            self._blob = None

    def _begin(self, header: Header) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        meta = read_meta(self.conn)
        if header.cluster != meta.get("cluster"):
            raise DatabaseError(
                f"batch is from cluster {header.cluster}, "
                f"this follower belongs to {meta.get('cluster')}"
            )
        if header.epoch < int(meta["epoch"]):
            raise StaleEpochError(
                f"batch from epoch {header.epoch} refused: already accepted epoch {meta['epoch']}"
            )
        if header.after != int(meta["seq"]):
            raise ProtocolError(f"batch starts at seq {header.after}, follower is at {meta['seq']}")
        self.header = header
        self.leader = str(meta.get("leader"))
        if header.schema is not None:
            self.schema = [SchemaObject(*o) for o in header.schema]
            schema_before_rows(self.conn, self.schema)


def schema_before_rows(conn: apsw.Connection, desired: list[SchemaObject]) -> list[str]:
    """Drop what `desired` no longer has (or has changed), create its missing tables.

    Indexes, views and triggers wait for `schema_after_rows`: a UNIQUE index the leader
    created after fixing duplicates must be built on the batch's rows, not the old ones.
    Returns the tables created (their rows arrive in full in the same batch).
    """
    have = {(o.type, o.name): o for o in user_schema(conn)}
    want = {(o.type, o.name): o for o in desired}
    stale = [o for k, o in have.items() if k not in want or want[k].sql != o.sql]
    for obj in sorted(stale, key=lambda o: DROP_ORDER.get(o.type, 9)):
        conn.execute(f"DROP {obj.type.upper()} IF EXISTS {quote(obj.name)}")
    return _create_missing(conn, [o for o in desired if o.type == "table"])


def schema_after_rows(conn: apsw.Connection, desired: list[SchemaObject]) -> None:
    """Create the indexes, views and triggers of `desired` that are missing."""
    _create_missing(conn, [o for o in desired if o.type != "table"])


def _create_missing(conn: apsw.Connection, objects: list[SchemaObject]) -> list[str]:
    created = []
    for obj in objects:
        # Checked one by one: a virtual table creates its shadow tables itself.
        exists = conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = ? AND name = ?", (obj.type, obj.name)
        ).fetchall()
        if exists:
            continue
        try:
            conn.execute(obj.sql)
        except apsw.Error as exc:
            message = f"cannot apply the leader's schema change {obj.sql!r}: {exc}"
            raise ApplyError(message) from exc
        if obj.type == "table":
            created.append(obj.name)
    return created


def apply_sequences(conn: apsw.Connection, sequences: list[Any] | None) -> None:
    """Make sqlite_sequence (AUTOINCREMENT counters) equal the leader's."""
    if sequences is None or not _has_sequence_table(conn):
        return
    wanted = sorted((str(name), int(seq)) for name, seq in sequences)
    if sorted(conn.execute("SELECT name, seq FROM sqlite_sequence")) != wanted:
        conn.execute("DELETE FROM sqlite_sequence")
        conn.executemany("INSERT INTO sqlite_sequence(name, seq) VALUES(?, ?)", wanted)


def _has_sequence_table(conn: apsw.Connection) -> bool:
    return bool(
        conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").fetchall()
    )


def apply_stream(conn: apsw.Connection, data: bytes) -> Position:
    """Apply a whole batch held in memory (tests and small batches)."""
    applier = Applier(conn)
    applier.feed(data)
    return applier.finish()
