"""Role changes of a file: promote, demote, a new epoch, the epoch history, divergence.

Pure core: each function works on an apsw connection inside its own transaction; clocks
are passed in (`now`, seconds since the epoch).

The **history** (meta `history`, JSON) lists every epoch: number, the seq it started after,
when, why and on which node. A node at position (E, s) is on the history of a leader whose
epoch E' > E began at seq S iff s <= S; otherwise its changes after S were never part of
the new timeline (it diverged).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from ..errors import DatabaseError
from . import capture, gate
from .db import connect, drop_triggers, read_meta, transaction, write_meta
from .positions import Position, log_head
from .sql import CAPTURE_PREFIX, FOLLOWERS, LOG, TABLES


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


def epoch_url(hist: list[dict[str, Any]], epoch: int) -> str:
    """The URL of the node that began `epoch` on this timeline ("" if not recorded)."""
    entry = next((h for h in hist if int(h["epoch"]) == epoch), None)
    return str((entry or {}).get("url") or "")


def fork_reason(hist: list[dict[str, Any]], at: Position, led_by: str) -> str | None:
    """Why a node at `at`, whose epoch was begun by `led_by`, is not on the timeline of
    `hist` (None: it is). Epoch numbers are unique per node; two nodes that began the same
    number are two timelines."""
    if diverged(hist, at):
        start = start_of_next_epoch(hist, at.epoch)
        return f"diverged: epoch {at.epoch} ended at seq {start} on this timeline, not {at.seq}"
    ours = epoch_url(hist, at.epoch)
    if ours and led_by and ours != led_by:
        return f"diverged: epoch {at.epoch} was begun by {ours} on this timeline, not {led_by}"
    return None


def promote(
    conn: apsw.Connection, node: str, url: str, why: str, now: float, epoch: int | None = None
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
                "at": now,
                "why": why,
                "node": node,
                "url": url,
            }
        )
        conn.execute(f"DELETE FROM {LOG}")
        # seq continues from what was applied: the log's head starts there. Nothing up to
        # seq is in this log (it arrived by replication), so the log covers only followers
        # at seq or later: one still behind must resync, never get a batch without them.
        conn.execute(
            f"INSERT INTO {LOG}(seq, tid, k0) VALUES(?, ?, NULL)", (seq, capture.SCHEMA_TID)
        )
        conn.execute(f"DELETE FROM {FOLLOWERS}")
        write_meta(
            conn, role="leader", epoch=new, history=json.dumps(hist), trimmed=seq, leader=url
        )
        conn.execute(f"DELETE FROM {TABLES}")
        # Capture re-registers every table (followers already hold this schema), and the
        # gate opens, in the same transaction: an app write either fails on the gate or is
        # captured, never committed in between.
        gate.remove(conn)
        write_meta(conn, schema_version=-1, schema_hash=capture.schema_digest(conn))
        capture.install_within(conn, resend_new=False)
    return Position(new, seq)


def new_epoch(conn: apsw.Connection, epoch: int, why: str, url: str, now: float) -> Position:
    """A leader file starts a new epoch at its head (re-elected after stepping down)."""
    with transaction(conn):
        meta = read_meta(conn)
        top = log_head(conn)
        hist = json.loads(meta.get("history") or "[]")
        hist.append({"epoch": epoch, "start_seq": top, "at": now, "why": why, "url": url})
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
        top = log_head(conn)
        drop_triggers(conn, CAPTURE_PREFIX)
        conn.execute(f"DELETE FROM {LOG}")
        conn.execute(f"DELETE FROM {FOLLOWERS}")
        conn.execute(f"DELETE FROM {TABLES}")
        write_meta(conn, role="follower", seq=top, leader=leader_url)
        gate.remove(conn)
        gate.install(conn, gate.follower_message(leader_url))
        return Position(int(meta["epoch"]), top)


def check_existing(path: Path, leaders_too: bool = False) -> dict[str, Any] | None:
    """Meta of an existing follower file (with `leaders_too`, also a leader's: it may rejoin
    a newer leader); None if there is none yet; refuse anything else."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    meta = peek(path)
    if meta.get("role") == "leader" and leaders_too:
        return meta
    if meta.get("role") != "follower":
        raise DatabaseError(
            f"{path} exists and is not a sqlrepl follower; refusing to overwrite it "
            "(move it away, or give another path)"
        )
    return meta


def peek_members(path: Path) -> list[str]:
    """The URLs a leader file remembers: its followers and the epochs' leaders."""
    meta = peek(path)
    if not meta:
        return []
    conn = connect(path, readonly=True)
    try:
        followers = [str(u) for (u,) in conn.execute(f"SELECT url FROM {FOLLOWERS}") if u]
    finally:
        conn.close()
    leaders = [str(h.get("url")) for h in json.loads(meta.get("history") or "[]") if h.get("url")]
    return sorted(set(followers + leaders))


def peek(path: Path) -> dict[str, Any]:
    """The meta of `path` read without changing anything ({} for a missing or empty file
    or one sqlrepl does not manage)."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    conn = connect(path, readonly=True)
    try:
        return read_meta(conn)
    finally:
        conn.close()
