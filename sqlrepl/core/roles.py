"""Role changes of a file: promote, demote, the write gate, epoch history, divergence.

Pure core: each function works on an apsw connection inside its own transaction.

The **write gate** is the set of guard triggers that refuse every app write (the applier's
connection runs with triggers off, so replay passes). A follower's gate is always closed;
a leader closes its own when it is demoted or loses its lease.

The **history** (meta `history`, JSON) lists every epoch: number, the seq it started after,
when, why and on which node. A node at position (E, s) is on the history of a leader whose
epoch E' > E began at seq S iff s <= S; otherwise its changes after S were never part of
the new timeline (it diverged).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apsw

from . import capture
from .apply import install_guards
from .db import Position, read_meta, transaction, write_meta
from .errors import DatabaseError
from .schema import table_info, user_tables
from .sql import (
    CAPTURE_PREFIX,
    FOLLOWERS,
    GUARD_PREFIX,
    LOG,
    TABLES,
    guard_triggers,
    like_prefix,
    quote,
)


@dataclass(frozen=True)
class Transition:
    """What a daemon becomes when its role ends: a leader, or a follower of `leader`."""

    role: str
    leader: str | None
    reason: str


def history(conn: apsw.Connection) -> list[dict[str, Any]]:
    return list(json.loads(read_meta(conn).get("history") or "[]"))


def start_of_next_epoch(hist: list[dict[str, Any]], epoch: int) -> int | None:
    """The seq after which the first epoch newer than `epoch` began (None: there is none)."""
    later = [h for h in hist if int(h["epoch"]) > epoch]
    return min((int(h["start_seq"]) for h in later), default=None)


def diverged(hist: list[dict[str, Any]], at: Position) -> bool:
    """Did a node at `at` hold changes that the timeline of `hist` never had?"""
    start = start_of_next_epoch(hist, at.epoch)
    return start is not None and at.seq > start


def gate_open(conn: apsw.Connection) -> bool:
    """Can apps write? (No guard trigger on any user table.)"""
    rows = conn.execute(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
        (like_prefix(GUARD_PREFIX),),
    ).fetchall()
    return rows[0][0] == 0


def close_gate(conn: apsw.Connection, reason: str) -> None:
    """Refuse every app write from now on, with an error naming `reason`."""
    with transaction(conn):
        for table in user_tables(conn):
            for stmt in _guards(table, reason):
                conn.execute(stmt)


def _guards(table: str, reason: str) -> list[str]:
    return guard_triggers(table, f"sqlrepl: writes refused: {reason}")


def _drop_triggers(conn: apsw.Connection, prefix: str) -> None:
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE ? ESCAPE '\\'",
        (like_prefix(prefix),),
    ).fetchall():
        conn.execute(f"DROP TRIGGER {quote(str(name))}")


def promote(
    conn: apsw.Connection, node: str, url: str, why: str, epoch: int | None = None
) -> Position:
    """Make a follower file the leader of a new epoch, continuing seq from what it applied.

    `epoch` (etcd: from the leader key) must be above the file's; by default it is +1.
    Opens the write gate and installs capture; returns the new position.
    """
    with transaction(conn):
        meta = read_meta(conn)
        if meta.get("role") != "follower":
            raise DatabaseError(f"{conn.filename} is not a follower (role {meta.get('role')})")
        old, seq = int(meta["epoch"]), int(meta["seq"])
        new = epoch if epoch is not None else old + 1
        if new <= old:
            raise DatabaseError(f"new epoch {new} is not above the current epoch {old}")
        hist = json.loads(meta.get("history") or "[]")
        hist.append(
            {
                "epoch": new,
                "start_seq": seq,
                "at": time.time(),
                "why": why,
                "node": node,
                "url": url,
            }
        )
        conn.execute(f"DELETE FROM {LOG}")
        # seq continues from what was applied: the log's head starts there.
        conn.execute(
            f"INSERT INTO {LOG}(seq, tid, k0) VALUES(?, ?, NULL)", (seq, capture.SCHEMA_TID)
        )
        conn.execute(f"DELETE FROM {FOLLOWERS}")
        write_meta(
            conn, role="leader", epoch=new, history=json.dumps(hist), trimmed=seq - 1, leader=url
        )
        _drop_triggers(conn, GUARD_PREFIX)
        conn.execute(f"DELETE FROM {TABLES}")
        # capture.install re-registers every table; followers already hold this schema.
        write_meta(conn, schema_version=-1, schema_hash=capture.schema_digest(conn))
    capture.install(conn, resend_new=False)
    return Position(new, seq)


def new_epoch(conn: apsw.Connection, epoch: int, why: str, url: str) -> Position:
    """A leader file starts a new epoch at its head (re-elected after stepping down)."""
    with transaction(conn):
        meta = read_meta(conn)
        top = capture.head(conn)
        hist = json.loads(meta.get("history") or "[]")
        hist.append({"epoch": epoch, "start_seq": top, "at": time.time(), "why": why, "url": url})
        write_meta(conn, epoch=epoch, history=json.dumps(hist))
        return Position(epoch, top)


def demote(conn: apsw.Connection, leader_url: str) -> Position:
    """Turn a leader file into a follower at its own head (no divergence checked here).

    Capture triggers go, the log empties, the gate closes naming `leader_url`.
    """
    with transaction(conn):
        meta = read_meta(conn)
        if meta.get("role") != "leader":
            raise DatabaseError(f"{conn.filename} is not a leader (role {meta.get('role')})")
        top = capture.head(conn)
        _drop_triggers(conn, CAPTURE_PREFIX)
        conn.execute(f"DELETE FROM {LOG}")
        conn.execute(f"DELETE FROM {FOLLOWERS}")
        conn.execute(f"DELETE FROM {TABLES}")
        write_meta(conn, role="follower", seq=top, leader=leader_url)
        _drop_triggers(conn, GUARD_PREFIX)
        install_guards(conn, leader_url)
        return Position(int(meta["epoch"]), top)


def divergent_changes(conn: apsw.Connection, after: int) -> Iterator[dict[str, Any]]:
    """The current image (or deletion) of every row a leader file logged after seq `after`:
    the changes its apps made that the new timeline never received."""
    names = {int(t): str(n) for t, n in conn.execute(f"SELECT tid, name FROM {TABLES}")}
    seen: set[tuple[Any, ...]] = set()
    rows = conn.execute(
        f"SELECT seq, tid, k0, k1, k2, k3 FROM {LOG} WHERE seq > ? AND k0 IS NOT NULL ORDER BY seq",
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


def open_gate(conn: apsw.Connection) -> None:
    """Let apps write again (a leader starting, or a switchover that did not happen)."""
    with transaction(conn):
        _drop_triggers(conn, GUARD_PREFIX)
