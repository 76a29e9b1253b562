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

from . import capture, roles
from .db import durable
from .positions import Position, trimmed
from .schema import table_info, user_tables
from .sql import LOG, TABLES, key_columns, quote

Key = tuple[str, tuple[Any, ...]]


def divergent_changes(conn: apsw.Connection, after: int) -> Iterator[dict[str, Any]]:
    """The current image (or deletion) of every row a leader file logged after seq `after`:
    the changes its apps made that the new timeline never received."""
    for seq, table, key in _logged(conn, after):
        info = table_info(conn, table)
        row = _image(conn, "main", table, info.keys, list(info.image_names), key)
        change: dict[str, Any] = {
            "seq": seq,
            "table": table,
            "key": dict(zip(info.keys, key, strict=True)),
        }
        if row is not None:
            change.update(op="upsert", row=row)
        else:
            change["op"] = "delete"
        yield change


def _logged(conn: apsw.Connection, after: int) -> Iterator[tuple[int, str, tuple[Any, ...]]]:
    """(seq, table, key) of each row the log names after `after`, once each."""
    names = {int(t): str(n) for t, n in conn.execute(f"SELECT tid, name FROM {TABLES}")}
    width = len([c for c in conn.execute(f"PRAGMA table_info({LOG})")]) - 2  # seq, tid, k…
    logged = ", ".join(key_columns(width))
    seen: set[Key] = set()
    rows = conn.execute(
        f"SELECT seq, tid, {logged} FROM {LOG} WHERE seq > ? AND k0 IS NOT NULL ORDER BY seq",
        (after,),
    ).fetchall()
    for seq, tid, *keys in rows:
        table = names.get(int(str(tid)))
        if table is None:
            continue
        key = tuple(keys[: len(table_info(conn, table).keys)])
        if (table, key) not in seen:
            seen.add((table, key))
            yield int(str(seq)), table, key


def log_covers(conn: apsw.Connection, fork: int) -> bool:
    """Does the log still name every change made after `fork`? Not if it was trimmed past
    it, or if this node was promoted after it (what it applied before is in no log)."""
    return trimmed(conn) <= fork


def differences(
    conn: apsw.Connection, theirs: Path, only: set[Key] | None = None
) -> Iterator[dict[str, Any]]:
    """Every row of `conn`'s user tables whose image `theirs` (another database file)
    lacks or holds differently, and every key `theirs` has that `conn` lacks; with `only`,
    just those (table, key) pairs."""
    conn.execute("ATTACH ? AS theirs", (str(theirs),))
    try:
        for table in user_tables(conn):
            info = table_info(conn, table)
            cols = [*info.keys, *info.columns]
            yield from _table_differences(conn, table, info.keys, cols, only)
    finally:
        conn.execute("DETACH theirs")


def _table_differences(
    conn: apsw.Connection,
    table: str,
    keys: tuple[str, ...],
    cols: list[str],
    only: set[Key] | None,
) -> Iterator[dict[str, Any]]:
    t = quote(table)
    listed = ", ".join(quote(c) for c in cols)
    key_list = ", ".join(quote(k) for k in keys)

    def names(schema: str) -> list[str]:
        return sorted(str(r[1]).lower() for r in conn.execute(f"PRAGMA {schema}.table_xinfo({t})"))

    comparable = names("theirs") == names("main")
    if comparable:
        mine = f"SELECT {listed} FROM main.{t} EXCEPT SELECT {listed} FROM theirs.{t}"
        missing = f"SELECT {key_list} FROM theirs.{t} EXCEPT SELECT {key_list} FROM main.{t}"
    else:  # a table the new leader lacks, or holds with other columns: every row
        mine, missing = f"SELECT {listed} FROM main.{t}", ""
    n = len(keys)
    for row in conn.execute(mine).fetchall():
        key = tuple(row[:n])
        if only is not None and (table, key) not in only:
            continue
        leader_row = _image(conn, "theirs", table, keys, cols, key) if comparable else None
        yield _entry(table, keys, key, "upsert", dict(zip(cols, row, strict=True)), leader_row)
    if missing:
        for found in conn.execute(missing).fetchall():
            key = tuple(found)
            if only is not None and (table, key) not in only:
                continue
            leader_row = _image(conn, "theirs", table, keys, cols, key)
            yield _entry(table, keys, key, "delete", None, leader_row)


def _entry(
    table: str,
    keys: tuple[str, ...],
    key: tuple[Any, ...],
    op: str,
    row: dict[str, Any] | None,
    leader_row: dict[str, Any] | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"table": table, "key": dict(zip(keys, key, strict=True)), "op": op}
    if row is not None:
        entry["row"] = row
    entry["leader_row"] = leader_row
    return entry


def _image(
    conn: apsw.Connection,
    schema: str,
    table: str,
    keys: tuple[str, ...],
    cols: list[str],
    key: tuple[Any, ...],
) -> dict[str, Any] | None:
    where = " AND ".join(f"{quote(k)} IS ?" for k in keys)
    found = conn.execute(
        f"SELECT {', '.join(quote(c) for c in cols)} FROM {schema}.{quote(table)} WHERE {where}",
        key,
    ).fetchall()
    return dict(zip(cols, found[0], strict=True)) if found else None


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def rollback_path(db: Path, mine: Position, fork: int, now: float) -> Path:
    return db.with_name(f"{db.name}.rollback-e{mine.epoch}-s{fork}-{int(now)}.jsonl")


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
    logged = {(table, key) for _seq, table, key in _logged(conn, fork)}
    path = rollback_path(Path(conn.filename), mine, fork, now)
    with open(path, "w") as out:
        for change in differences(conn, theirs, logged if covered else None):
            change["logged"] = (change["table"], tuple(change["key"].values())) in logged
            out.write(json.dumps(change, default=_json_value) + "\n")
    durable(path)
    return path
