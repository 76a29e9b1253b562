"""A deposed leader's divergent changes, and the rollback file that keeps them.

When a leader file rejoins a newer leader whose history forked before the file's head,
every row it logged after the fork point goes to a JSON-lines file beside the database
(one object per row: `table`, `key`, `op` "upsert" with the `row`, or "delete"; BLOBs as
{"base64": …}), fsynced before anything else touches the file. Nothing is merged or
dropped: the operator decides.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from . import roles
from .db import durable
from .positions import Position
from .schema import table_info
from .sql import LOG, TABLES, key_columns, quote


def divergent_changes(conn: apsw.Connection, after: int) -> Iterator[dict[str, Any]]:
    """The current image (or deletion) of every row a leader file logged after seq `after`:
    the changes its apps made that the new timeline never received."""
    names = {int(t): str(n) for t, n in conn.execute(f"SELECT tid, name FROM {TABLES}")}
    width = len([c for c in conn.execute(f"PRAGMA table_info({LOG})")]) - 2  # seq, tid, k…
    logged = ", ".join(key_columns(width))
    seen: set[tuple[Any, ...]] = set()
    rows = conn.execute(
        f"SELECT seq, tid, {logged} FROM {LOG} WHERE seq > ? AND k0 IS NOT NULL ORDER BY seq",
        (after,),
    ).fetchall()
    for seq, tid, *keys in rows:
        table = names.get(int(str(tid)))
        if table is None:
            continue
        info = table_info(conn, table)
        key = tuple(keys[: len(info.keys)])
        if (table, key) in seen:
            continue
        seen.add((table, key))
        where = " AND ".join(f"{quote(k)} IS ?" for k in info.keys)
        cols = list(info.image_names)
        found = conn.execute(
            f"SELECT {', '.join(quote(c) for c in cols)} FROM {quote(table)} WHERE {where}", key
        ).fetchall()
        change: dict[str, Any] = {
            "seq": seq,
            "table": table,
            "key": dict(zip(info.keys, key, strict=True)),
        }
        if found:
            change.update(op="upsert", row=dict(zip(cols, found[0], strict=True)))
        else:
            change["op"] = "delete"
        yield change


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def save_divergence(
    conn: apsw.Connection, history: list[dict[str, Any]], mine: Position, now: float
) -> Path:
    """Write every change made after the fork point to a rollback file next to the
    database, flushed to disk (file and directory); return its path."""
    fork = roles.start_of_next_epoch(history, mine.epoch)
    assert fork is not None
    db = Path(conn.filename)
    path = db.with_name(f"{db.name}.rollback-e{mine.epoch}-s{fork}-{int(now)}.jsonl")
    with open(path, "w") as out:
        for change in divergent_changes(conn, fork):
            out.write(json.dumps(change, default=_json_value) + "\n")
    durable(path)
    return path
