"""The follower's own file: opening it, installing a snapshot, or rejoining a deposed
leader's file (its divergent changes go to a rollback file first).

`LocalFile` owns the file's connection (`db`), what the file is (`meta`) and the rollback
file it wrote; the replication loop calls its methods and keeps the positions they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ...core import capture, gate, image, roles, rollback, sidecars, snapshot
from ...core.apply import applier_connection
from ...core.db import connect, durable, ensure_position_view
from ...core.positions import Position, follower_position, read_position
from ...errors import DatabaseError, StorageError
from .. import metrics, transfer
from ..client import Client
from ..database import Database
from .progress import Meter

log = logging.getLogger("sqlrepl.follower")


class LocalFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Database | None = None
        self._meta = roles.check_existing(path, leaders_too=True)
        self._rollback: str | None = None
        #: This role closed a leader file's gate at start (reopened if the rejoin is refused).
        self._gate_closed = False

    @property
    def db(self) -> Database | None:
        """The applier's connection, once the file is a follower's and open."""
        return self._db

    @property
    def meta(self) -> dict[str, Any] | None:
        """What the file is (role, cluster, epoch, node, …); None: not sqlrepl's yet."""
        return self._meta

    @property
    def rollback(self) -> str | None:
        """The rollback file written when it rejoined, or the copy kept on a fork."""
        return self._rollback

    def open(self, leader: str) -> Position:
        """Open the follower's file for replay; its position."""
        conn = applier_connection(connect(self.path))
        # An applied batch is on disk before the next pull acknowledges it (power loss
        # included), whatever the SQLite build's default for WAL files.
        conn.execute("PRAGMA synchronous=FULL")
        ensure_position_view(conn)  # a file made by an older version: apps read tokens here
        self._db = Database(conn)
        where = follower_position(conn)
        log.info("following %s from %s", leader, where)
        return where

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def close_leader_gate(self, leader: str) -> bool:
        """A leader's file about to rejoin another leader refuses app writes from the
        start: True if its gate was open (and is now closed)."""
        with contextlib.closing(connect(self.path)) as conn:
            if not gate.is_open(conn):
                return False
            gate.close(conn, f"this node is rejoining {leader} as a follower")
        log.warning("write gate closed: this node rejoins %s as a follower", leader)
        self._gate_closed = True
        return True

    def reopen_gate(self) -> None:
        """Undo `close_leader_gate` when the rejoin is refused: the file stays as it was."""
        if not self._gate_closed:
            return
        with contextlib.closing(connect(self.path)) as conn:
            gate.open_(conn)
        self._gate_closed = False

    async def install(self, tmp: Path, leader: str, node: str) -> Position:
        """Make the verified snapshot `tmp` a follower and put it in place (a rename, or a
        live replace readers never see torn); the file's position."""
        started = time.monotonic()
        metrics.RECEIVED_BYTES.inc(tmp.stat().st_size)
        try:
            where = await asyncio.to_thread(snapshot.make_follower, tmp, leader, node)
            if self._db is not None:
                await self._db.run(snapshot.place, tmp, self.path)
            else:
                await asyncio.to_thread(snapshot.place, tmp, self.path)
        finally:
            transfer.discard(tmp)
        metrics.SNAPSHOTS.labels("in").inc()
        metrics.SNAPSHOT_SECONDS.labels("in").observe(time.monotonic() - started)
        log.info("bootstrapped %s from a snapshot at %s", self.path, where)
        self._meta = roles.check_existing(self.path)
        if self._db is None:
            return self.open(leader)
        return await self._db.run(follower_position, self._db.conn)

    async def rejoin(
        self, leader: str, history: list[dict[str, Any]], fetch: Callable[[], Awaitable[Path]]
    ) -> Path | None:
        """A deposed leader's file: save what diverged to a rollback file, then follow.
        If it diverged, return the new leader's snapshot (from `fetch`) it was compared
        with: its content must be resynced from it."""
        conn = connect(self.path)
        fetched: Path | None = None
        try:
            mine = await asyncio.to_thread(read_position, conn)
            # Writes after a schema change that capture had not caught up with are in no
            # log (capture waits for a quiet moment): the file may hold what the leader lacks.
            unsynced = await asyncio.to_thread(capture.schema_moved, conn)
            if roles.diverged(history, mine) or unsynced:
                fetched = await fetch()
                path = await asyncio.to_thread(
                    rollback.save_divergence, conn, fetched, history, mine, time.time()
                )
                self._rollback = str(path)
                log.error(
                    "this node diverged at %s: what it holds that %s does not is in %s; resyncing",
                    mine,
                    leader,
                    path,
                )
            await asyncio.to_thread(roles.demote, conn, leader)
        except BaseException:
            if fetched is not None:
                transfer.discard(fetched)
            raise
        finally:
            conn.close()
        self._meta = roles.check_existing(self.path)
        log.info("rejoined as a follower of %s", leader)
        return fetched

    async def save_fork(self, where: Position, why: str) -> None:
        """This follower is not on its leader's timeline: keep a copy of its file (a
        snapshot, fsynced) before it resyncs, name it in the log and in status."""
        assert self._db is not None
        path = sidecars.fork_copy(self.path, where.epoch, where.seq, time.time())
        await self._db.run(snapshot.take, self._db.conn, path, time.time())
        await asyncio.to_thread(durable, path)
        self._rollback = str(path)
        log.error("%s: this follower's content is saved in %s; resyncing", why, path)


def download_path(db: Path) -> Path:
    """Where a follower receives its snapshot: a fixed name, so that a download cut off
    (the daemon killed, the link cut) resumes when the daemon asks again."""
    return sidecars.beside(db, sidecars.DOWNLOAD)


async def fetch_snapshot(db: Path, client: Client, params: dict[str, Any], meter: Meter) -> Path:
    """Download a snapshot of the node `client` asks beside `db` and verify it; its path."""
    path = download_path(db)
    log.info("downloading a snapshot from %s", client.url)
    try:
        got = await transfer.download(
            client, path, params, meter.report, resumable=True, direct=True
        )
        await asyncio.to_thread(image.check_header, path, got.size)
    except (OSError, StorageError, DatabaseError):
        transfer.discard(path)  # a full disk or a bad image: nothing worth resuming
        raise
    resumed = f", resumed at byte {got.resumed_at}" if got.resumed_at else ""
    log.info("downloaded a snapshot at %s (%d bytes%s)", got.position, got.size, resumed)
    return path
