"""Building a batch on the leader: one read transaction, one consistent state.

A batch moves a follower from the leader's state at `after` to its state at `head`:
every key logged in (after, head] ships once, with the row's *current* image, or as a
delete when the row is gone. Frames, in order:

    wire.Header                 header
    ["clear", tid]            empty the table (a full resend of it follows)
    ["del", tid, [key, …]]    delete these keys
    ["put", tid, [row, …]]    insert these images (keys first), OR REPLACE if the table says so
    ["fill", tid, rowid, column, offset, size, text, bytes]
                              a piece of one large value (below)

For a table with a secondary UNIQUE index every touched key is deleted before any image
is put (so swapped unique values never collide); other tables take their images by
INSERT OR REPLACE first, then the deletes of rows that are gone.

Frames are bounded in bytes (the writer's `limit`), not in rows: a frame holds as many
rows as fit. A value larger than half a frame in a column the follower can write piece
by piece (`TableInfo.streamable`) ships as an empty placeholder in its row, then as
`fill` frames read from the leader's file with incremental blob I/O and written into the
follower's the same way: neither side ever holds it whole. Any other large value (a key,
an indexed column, a WITHOUT ROWID table) goes in its row, and a row larger than a frame
is cut into several frames by the writer (`wire.MORE`).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import apsw

from ..errors import SnapshotNeeded
from .db import read_meta, schema_version, transaction
from .positions import log_head, trimmed
from .schema import TableInfo, fts5_fingerprints, fts5_tables, table_info, user_schema
from .sql import LOG, TABLES, key_columns, quote
from .wire import FrameWriter, Header, TableShape, encode

#: The most rows (or keys) per frame.
CHUNK = 1000
#: Rows in a table's first frame, before the size of its rows is known (each of the
#: leader's concurrent builds holds a frame's rows twice: as read, and encoded).
FIRST_CHUNK = 1
#: Room left in a `fill` frame for everything but the piece of the value.
FILL_OVERHEAD = 256


class SchemaMoved(Exception):
    """The schema changed since capture was synced: sync and build again."""


class TableCache:
    """Table shapes by tid, valid for one synced schema version (introspection is most of
    the cost of a small batch)."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.names: dict[int, str] = {}
        self.tables: dict[int, TableInfo] = {}
        self.fts5_groups: dict[str, list[str]] | None = None
        self.has_sequences = False

    def get(self, conn: apsw.Connection, version: int, tids: Iterable[int]) -> dict[int, TableInfo]:
        if version != self.version:
            self.version, self.tables, self.fts5_groups = version, {}, None
            self.has_sequences = bool(
                conn.execute(
                    "SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'"
                ).fetchall()
            )
            self.names = {
                int(t): str(n) for t, n in conn.execute(f"SELECT tid, name FROM {TABLES}")
            }
        for tid in tids:
            if tid not in self.tables and tid in self.names:
                self.tables[tid] = table_info(conn, self.names[tid])
        return {tid: self.tables[tid] for tid in tids if tid in self.tables}

    def fts5(self, conn: apsw.Connection, version: int) -> dict[str, list[str]]:
        self.get(conn, version, ())
        if self.fts5_groups is None:
            self.fts5_groups = fts5_tables(conn)
        return self.fts5_groups

    def tid(self, conn: apsw.Connection, version: int, name: str) -> int | None:
        self.get(conn, version, ())
        return next((tid for tid, n in self.names.items() if n == name), None)


def build(
    conn: apsw.Connection,
    after: int,
    out: FrameWriter,
    cache: TableCache | None = None,
    fts5: dict[str, str] | None = None,
) -> int:
    """Write the batch (after, head] to `out`; return head.

    `fts5` holds the follower's FTS5 fingerprints (`schema.fts5_fingerprints`): an FTS5
    table whose fingerprint differs here is resent whole (its shadow tables carry no
    triggers), so the batch still equals the leader's state at head.
    """
    with transaction(conn, "DEFERRED"):
        meta = read_meta(conn)
        version = schema_version(conn)
        if version != meta.get("schema_version"):
            raise SchemaMoved()
        top = log_head(conn)
        if after < trimmed(conn, meta) or after > top:
            raise SnapshotNeeded(f"the leader's log no longer covers seq {after} (head {top})")
        cache = cache or TableCache()
        _define_large(conn)
        touched = _touched(conn, after, top)
        groups = cache.fts5(conn, version)
        owners = {shadow: name for name, shadows in groups.items() for shadow in shadows}
        for shadow in _stale_fts5(conn, groups, fts5 or {}):
            tid = cache.tid(conn, version, shadow)
            if tid is not None:
                touched[tid] = True
        tables = cache.get(conn, version, touched)
        marked = any(touched.values())
        header = Header(
            cluster=str(meta["cluster"]),
            epoch=int(meta["epoch"]),
            after=after,
            head=top,
            schema=[[o.type, o.name, o.tbl_name, o.sql] for o in user_schema(conn)]
            if marked
            else None,
            tables={tid: shape(t, owners.get(t.name)) for tid, t in tables.items()},
            sequences=_sequences(conn) if cache.has_sequences else None,
            history=json.loads(meta["history"]) if meta.get("history") else None,
        )
        out.send(header.to_wire())
        for tid, info in tables.items():
            if touched[tid]:
                _full(conn, out, tid, info)
            else:
                _changes(conn, out, tid, info, after, top)
        out.end()
        return top


def _stale_fts5(
    conn: apsw.Connection, groups: dict[str, list[str]], theirs: dict[str, str]
) -> list[str]:
    """Shadow tables of the FTS5 tables whose fingerprint differs from the follower's."""
    ours = fts5_fingerprints(conn, groups)
    return [s for name, fp in ours.items() if theirs.get(name) != fp for s in groups[name]]


def _sequences(conn: apsw.Connection) -> list[list[Any]]:
    """The AUTOINCREMENT counters (sqlite_sequence takes no triggers: it ships whole)."""
    return [list(r) for r in conn.execute("SELECT name, seq FROM sqlite_sequence")]


def replace_rows(info: TableInfo) -> bool:
    """Tables without a secondary UNIQUE index take images by INSERT OR REPLACE, no deletes."""
    return not info.unique_indexes


def shape(info: TableInfo, fts5: str | None = None) -> TableShape:
    return TableShape(info.name, info.keys, info.columns, replace_rows(info), fts5)


def _touched(conn: apsw.Connection, after: int, top: int) -> dict[int, bool]:
    """tid -> whether a marker asks for the whole table (DISTINCT is far cheaper than GROUP BY)."""
    logged = f"SELECT DISTINCT tid FROM {LOG} WHERE seq > ? AND seq <= ?"
    marked = {tid for (tid,) in conn.execute(logged + " AND k0 IS NULL", (after, top))}
    return {tid: tid in marked for (tid,) in conn.execute(logged, (after, top))}


def _send_rows(out: FrameWriter, kind: str, tid: int, rows: Iterator[tuple[Any, ...]]) -> None:
    """Send `rows` in frames of at most `out.limit` bytes: as many rows per frame as the
    rows sent so far say fit (at most CHUNK)."""
    count = FIRST_CHUNK
    while chunk := list(islice(rows, count)):
        payload = encode([kind, tid, chunk])
        if len(payload) > out.limit and len(chunk) > 1:
            half = len(chunk) // 2
            _send_rows(out, kind, tid, iter(chunk[:half]))
            _send_rows(out, kind, tid, iter(chunk[half:]))
        else:
            out.send_encoded(payload)  # one row larger than a frame is cut by the writer
        per_row = max(1, len(payload) // len(chunk))
        count = max(1, min(CHUNK, out.limit // 2 // per_row))


#: The SQL function a row image calls, instead of reading it, for each value too large to
#: go inline (SQLite evaluates only the branch of `iif` it takes: nothing for the others).
LARGE = "_sqlrepl_large"
#: Per connection it is defined on (once: defining it again would expire the connection's
#: prepared statements), the large values the images just read left out, as (rowid,
#: column, text). A connection builds one batch at a time.
_left_out: weakref.WeakKeyDictionary[apsw.Connection, list[tuple[int, int, bool]]] = (
    weakref.WeakKeyDictionary()
)


def _define_large(conn: apsw.Connection) -> None:
    if conn in _left_out:
        return
    found: list[tuple[int, int, bool]] = []

    def note(*args: Any) -> bytes:
        rowid, at, kind = args  # (rowid, the column's place in the image, its typeof)
        found.append((int(rowid), int(at), kind == "text"))
        return b""  # the placeholder its `fill` frames write over

    conn.create_scalar_function(LARGE, note, 3)
    _left_out[conn] = found


def _image(info: TableInfo, limit: int) -> str:
    """The select list of a row image: a large value of a streamable column is left out
    (an empty placeholder stands for it until its `fill` frames arrive)."""
    large, rowid = limit // 2, quote(info.keys[0])
    return ", ".join(
        f"iif(octet_length({quote(c)}) > {large}, "
        f"{LARGE}({rowid}, {at}, typeof({quote(c)})), {quote(c)})"
        if c in info.streamable
        else quote(c)
        for at, c in enumerate(info.image_names)
    )


def _send_images(
    conn: apsw.Connection, out: FrameWriter, tid: int, info: TableInfo, query: str
) -> None:
    """The row images `query` selects, then the large values they left out, piece by piece
    (read with incremental blob I/O: never whole)."""
    found = _left_out[conn]
    found.clear()
    _send_rows(out, "put", tid, conn.execute(query))
    piece = max(1, out.limit - FILL_OVERHEAD)
    for rowid, at, text in found:  # (blob reads call no SQL function: the list stays)
        with conn.blob_open("main", info.name, info.image_names[at], rowid, False) as blob:
            size = blob.length()
            for offset in range(0, size, piece):
                out.send(["fill", tid, rowid, at, offset, size, text, blob.read(piece)])
    found.clear()


def _full(conn: apsw.Connection, out: FrameWriter, tid: int, info: TableInfo) -> None:
    out.send(["clear", tid])
    _send_images(conn, out, tid, info, f"SELECT {_image(info, out.limit)} FROM {quote(info.name)}")


def _changes(
    conn: apsw.Connection,
    out: FrameWriter,
    tid: int,
    info: TableInfo,
    after: int,
    top: int,
) -> None:
    """Current images, and deletes of gone rows, of every key logged for `tid` in (after, top]."""
    logged_keys = key_columns(len(info.keys))
    keys = ", ".join(logged_keys)
    logged = (
        f"SELECT {keys} FROM {LOG} "
        f"WHERE tid = {tid} AND seq > {after} AND seq <= {top} AND k0 IS NOT NULL"
    )
    table = quote(info.name)
    key = ", ".join(quote(k) for k in info.keys)
    present = f"SELECT {_image(info, out.limit)} FROM {table} WHERE ({key}) IN ({logged})"
    if not replace_rows(info):
        # A secondary UNIQUE index: every touched key goes first, so images never collide.
        _send_rows(out, "del", tid, conn.execute(f"SELECT DISTINCT {keys} FROM ({logged})"))
        _send_images(conn, out, tid, info, present)
        return
    # Images replace rows in place and a key is either present or gone, so images go first
    # (the follower starts applying sooner) and only the keys of gone rows follow.
    _send_images(conn, out, tid, info, present)
    join = " AND ".join(
        f"t.{quote(k)} = k.{c}" for k, c in zip(info.keys, logged_keys, strict=True)
    )
    gone = (
        f"SELECT {keys} FROM (SELECT DISTINCT {keys} FROM ({logged})) AS k "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {join})"
    )
    _send_rows(out, "del", tid, conn.execute(gone))
