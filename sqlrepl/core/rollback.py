"""A deposed leader's divergent changes, and the rollback file that keeps them.

When a leader file rejoins a newer leader whose history forked before the file's head,
whatever the file holds that the new leader does not goes to a JSON-lines file beside
the database, fsynced before anything else touches the file. Nothing is merged or
dropped: the operator decides.

The file is found by comparing row images with the new leader's snapshot, not by
trusting the local log alone: the log misses changes trimmed from it and changes this
node received by replication before it was promoted. Where the log does cover every
change since the fork point (nothing trimmed past it, and this node led since before
it), only the rows it names are compared, so rows the new leader changed by itself are
not reported. Otherwise every row that differs is reported (some may be the new leader's
own changes: `leader_row` shows its image so the operator can tell).

One object per line: `table`, `key`, `op` ("upsert" with this node's `row`; "delete":
this node does not have the row), `leader_row` (the new leader's image, or null) and
`logged` (true if this node's own log names the row after the fork; false if the log
could not tell). BLOBs are {"base64": …}.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from . import capture, roles, sidecars
from .db import durable
from .positions import Position, trimmed
from .schema import table_info, user_tables
from .sql import LOG, TABLES, key_columns, quote

Key = tuple[str, tuple[Any, ...]]


def logged_keys(conn: apsw.Connection, after: int) -> list[Key]:
    """(table, key) of each row a leader file's log names after seq `after`, once each, in
    log order: the rows its apps changed that the new timeline may never have received."""
    names = {int(t): str(n) for t, n in conn.execute(f"SELECT tid, name FROM {TABLES}")}
    width = len([c for c in conn.execute(f"PRAGMA table_info({LOG})")]) - 2  # seq, tid, k…
    key_width = {tid: len(table_info(conn, name).keys) for tid, name in names.items()}
    found: dict[Key, None] = {}
    for tid, *keys in conn.execute(
        f"SELECT tid, {', '.join(key_columns(width))} FROM {LOG} "
        "WHERE seq > ? AND k0 IS NOT NULL ORDER BY seq",
        (after,),
    ):
        table = names.get(int(str(tid)))
        if table is not None:
            found[(table, tuple(keys[: key_width[int(str(tid))]]))] = None
    return list(found)


def log_covers(conn: apsw.Connection, fork: int) -> bool:
    """Does the log still name every change made after `fork`? Not if it was trimmed past
    it, or if this node was promoted after it (what it applied before is in no log)."""
    return trimmed(conn) <= fork


def differences(
    conn: apsw.Connection, theirs: Path, only: list[Key] | None = None
) -> Iterator[dict[str, Any]]:
    """Every row of `conn`'s user tables whose image `theirs` (another database file)
    lacks or holds differently, and every key `theirs` has that `conn` lacks. With `only`,
    just those (table, key) pairs, looked up one by one (no table is scanned)."""
    wanted: dict[str, list[tuple[Any, ...]]] = {}
    for table, key in only or []:
        wanted.setdefault(table, []).append(key)
    conn.execute("ATTACH ? AS theirs", (str(theirs),))
    try:
        for table in user_tables(conn):
            info = table_info(conn, table)
            shape = _Shape(conn, table, info.keys, [*info.keys, *info.columns])
            if only is None:
                yield from shape.scan()
            else:
                yield from shape.compare(wanted.get(table, []))
    finally:
        conn.execute("DETACH theirs")


class _Shape:
    """One table of `main`, compared with the same table of the attached `theirs`."""

    def __init__(
        self, conn: apsw.Connection, table: str, keys: tuple[str, ...], cols: list[str]
    ) -> None:
        self.conn, self.table, self.keys, self.cols = conn, table, keys, cols
        t = quote(table)

        def names(schema: str) -> list[str]:
            pragma = f"PRAGMA {schema}.table_xinfo({t})"
            return sorted(str(r[1]).lower() for r in conn.execute(pragma))

        #: Does `theirs` hold this table with the same columns? (Else every row differs.)
        self.comparable = names("theirs") == names("main")

    def scan(self) -> Iterator[dict[str, Any]]:
        """Every difference, found by EXCEPT over both tables."""
        t, n = quote(self.table), len(self.keys)
        listed = ", ".join(quote(c) for c in self.cols)
        if not self.comparable:
            for row in self.conn.execute(f"SELECT {listed} FROM main.{t}").fetchall():
                yield self._entry(tuple(row[:n]), dict(zip(self.cols, row, strict=True)), None)
            return
        mine = f"SELECT {listed} FROM main.{t} EXCEPT SELECT {listed} FROM theirs.{t}"
        for row in self.conn.execute(mine).fetchall():
            key = tuple(row[:n])
            image = dict(zip(self.cols, row, strict=True))
            yield self._entry(key, image, self._image("theirs", key))
        key_list = ", ".join(quote(k) for k in self.keys)
        missing = f"SELECT {key_list} FROM theirs.{t} EXCEPT SELECT {key_list} FROM main.{t}"
        for found in self.conn.execute(missing).fetchall():
            key = tuple(found)
            yield self._entry(key, None, self._image("theirs", key))

    def compare(self, keys: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
        """The differences among these keys only."""
        for key in keys:
            mine = self._image("main", key)
            leader = self._image("theirs", key) if self.comparable else None
            if mine != leader:
                yield self._entry(key, mine, leader)

    def _entry(
        self, key: tuple[Any, ...], row: dict[str, Any] | None, leader: dict[str, Any] | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "table": self.table,
            "key": dict(zip(self.keys, key, strict=True)),
            "op": "upsert" if row is not None else "delete",
        }
        if row is not None:
            entry["row"] = row
        entry["leader_row"] = leader
        return entry

    def _image(self, schema: str, key: tuple[Any, ...]) -> dict[str, Any] | None:
        where = " AND ".join(f"{quote(k)} IS ?" for k in self.keys)
        listed = ", ".join(quote(c) for c in self.cols)
        found = self.conn.execute(
            f"SELECT {listed} FROM {schema}.{quote(self.table)} WHERE {where}", key
        ).fetchall()
        return dict(zip(self.cols, found[0], strict=True)) if found else None


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def rollback_path(db: Path, mine: Position, fork: int, now: float) -> Path:
    return sidecars.rollback(db, mine.epoch, fork, now)


def save_divergence(
    conn: apsw.Connection,
    theirs: Path,
    history: list[dict[str, Any]],
    mine: Position,
    now: float,
) -> Path:
    """Write whatever this leader file holds that `theirs` (the new leader's snapshot)
    does not to a rollback file next to the database, flushed to disk (file and
    directory); return its path."""
    fork = roles.start_of_next_epoch(history, mine.epoch)
    assert fork is not None
    # Rows written after a schema change capture had not caught up with are in no log.
    covered = log_covers(conn, fork) and not capture.schema_moved(conn)
    logged = logged_keys(conn, fork)
    named = set(logged)
    path = rollback_path(Path(conn.filename), mine, fork, now)
    with open(path, "w") as out:
        for change in differences(conn, theirs, logged if covered else None):
            change["logged"] = (change["table"], tuple(change["key"].values())) in named
            out.write(json.dumps(change, default=_json_value) + "\n")
    durable(path)
    return path
