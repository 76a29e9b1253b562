"""Getting a follower's file ready: open it, install a snapshot, or rejoin a deposed
leader's file (its divergent changes go to a rollback file first)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import capture, gate, image, roles, rollback, snapshot
from ..core.apply import applier_connection
from ..core.db import connect, durable, ensure_position_view
from ..core.positions import follower_position, read_position
from ..errors import DatabaseError, StorageError
from . import metrics, transfer
from .client import Client
from .database import Database

if TYPE_CHECKING:
    from .follower import Follower

log = logging.getLogger("sqlrepl.follower")


def close_leader_gate(f: Follower) -> bool:
    """A leader's file about to rejoin another leader refuses app writes from the start:
    True if its gate was open (and is now closed)."""
    with contextlib.closing(connect(f.config.db)) as conn:
        if not gate.is_open(conn):
            return False
        gate.close(conn, f"this node is rejoining {f.config.leader} as a follower")
    log.warning("write gate closed: this node rejoins %s as a follower", f.config.leader)
    return True


def reopen_gate(f: Follower) -> None:
    """Undo `close_leader_gate` when the rejoin is refused: the file stays as it was."""
    with contextlib.closing(connect(f.config.db)) as conn:
        gate.open_(conn)


def open_file(f: Follower) -> None:
    """Open the follower's own file for replay and read its position."""
    conn = applier_connection(connect(f.config.db))
    ensure_position_view(conn)  # a file made by an older version: apps read tokens here
    f.db = Database(conn)
    f.progress.position = follower_position(conn)
    log.info("following %s from %s", f.config.leader, f.progress.position)


def download_path(db: Path) -> Path:
    """Where a follower receives its snapshot: a fixed name, so that a download cut off
    (the daemon killed, the link cut) resumes when the daemon asks again."""
    return db.with_name(f"{db.name}.sqlrepl-download")


async def fetch_snapshot(f: Follower, client: Client) -> Path:
    """Download a snapshot of the leader beside the file and verify it; return its path."""
    path = download_path(f.config.db)
    log.info("downloading a snapshot from %s", f.config.leader)
    meter = f.progress.transfer = transfer.Meter()
    report = _log_progress(meter)
    try:
        got = await transfer.download(
            client, path, {"node": f.node, "url": f.url}, report, resumable=True, direct=True
        )
        await asyncio.to_thread(image.check_header, path, got.size)
    except (OSError, StorageError, DatabaseError):
        transfer.discard(path)  # a full disk or a bad image: nothing worth resuming
        raise
    finally:
        f.progress.transfer = None
    resumed = f", resumed at byte {got.resumed_at}" if got.resumed_at else ""
    log.info("downloaded a snapshot at %s (%d bytes%s)", got.position, got.size, resumed)
    return path


async def install_snapshot(f: Follower, client: Client, fetched: Path | None = None) -> None:
    """Make a verified snapshot (`fetched`, or one downloaded now) a follower and put it in
    place (a rename, or a live replace readers never see torn)."""
    db = f.config.db
    started = time.monotonic()
    tmp = fetched or await fetch_snapshot(f, client)
    metrics.RECEIVED_BYTES.inc(tmp.stat().st_size)
    try:
        where = await asyncio.to_thread(snapshot.make_follower, tmp, f.config.leader, f.node)
        if f.db is not None:
            await f.db.run(snapshot.place, tmp, db)
        else:
            await asyncio.to_thread(snapshot.place, tmp, db)
    finally:
        transfer.discard(tmp)
    metrics.SNAPSHOTS.labels("in").inc()
    metrics.SNAPSHOT_SECONDS.labels("in").observe(time.monotonic() - started)
    log.info("bootstrapped %s from a snapshot at %s", db, where)
    f.meta = roles.check_existing(db)
    if f.db is None:
        open_file(f)
    else:
        f.progress.position = await f.db.run(follower_position, f.db.conn)


async def rejoin(f: Follower, client: Client) -> Path | None:
    """A deposed leader's file: save what diverged to a rollback file, then follow.
    If it diverged, return the new leader's snapshot it was compared with (its content
    must be resynced from it)."""
    conn = connect(f.config.db)
    fetched: Path | None = None
    try:
        mine = await asyncio.to_thread(read_position, conn)
        # Writes after a schema change that capture had not caught up with are in no log
        # (capture waits for a quiet moment): the file may hold what the new leader lacks.
        unsynced = await asyncio.to_thread(capture.schema_moved, conn)
        if roles.diverged(f.history, mine) or unsynced:
            fetched = await fetch_snapshot(f, client)
            path = await asyncio.to_thread(
                rollback.save_divergence, conn, fetched, f.history, mine, time.time()
            )
            f.rollback = str(path)
            log.error(
                "this node diverged at %s: what it holds that %s does not is in %s; resyncing",
                mine,
                f.config.leader,
                path,
            )
        await asyncio.to_thread(roles.demote, conn, f.config.leader)
    except BaseException:
        if fetched is not None:
            transfer.discard(fetched)
        raise
    finally:
        conn.close()
    f.meta = roles.check_existing(f.config.db)
    log.info("rejoined as a follower of %s", f.config.leader)
    return fetched


async def save_fork(f: Follower, why: str) -> None:
    """This follower is not on its leader's timeline: keep a copy of its file (a snapshot,
    fsynced) before it resyncs, name it in the log and in status."""
    assert f.db is not None and f.progress.position is not None
    where = f.progress.position
    db = f.config.db
    path = db.with_name(f"{db.name}.fork-e{where.epoch}-s{where.seq}-{int(time.time())}.db")
    await f.db.run(snapshot.take, f.db.conn, path, time.time())
    await asyncio.to_thread(durable, path)
    f.rollback = str(path)
    log.error("%s: this follower's content is saved in %s; resyncing from a snapshot", why, path)


def _log_progress(meter: transfer.Meter) -> transfer.Progress:
    last = [0.0]

    def report(done: int, total: int) -> None:
        meter.done, meter.total = done, total
        now = time.monotonic()
        if now - last[0] >= 2 or done == total:
            last[0] = now
            log.info(
                "snapshot: %d of %d bytes (%.0f MiB/s)",
                done,
                total,
                meter.view()["bytes_per_s"] / 2**20,
            )

    return report
