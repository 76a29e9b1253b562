"""The follower role: what it knows of itself and its leader, promotion, the role's tasks.

Pulling and applying batches lives in `replication`, the HTTP API in `api`,
the HA loop in `ha`. Every background task runs under one `Supervisor`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from typing import Any

from ... import config
from ...config import own_url, server_ssl
from ...coord import Coordinator
from ...core import decisions, roles
from ...core.positions import Position
from .. import ha
from ..configs import FollowerConfig
from ..http import forward_event, run_server
from ..members import Members
from ..supervisor import RoleEnd, Supervisor
from .api import FollowerAPI
from .archive import Recorder
from .bootstrap import LocalFile
from .progress import Progress
from .replication import Replicator

log = logging.getLogger("sqlrepl.follower")


class Follower:
    """The follower role. Its components own their state: `LocalFile` the file (its
    connection, what it is, its rollback), `Replicator` the progress, the leader followed
    and its history, `Recorder` the archive."""

    def __init__(self, config: FollowerConfig, coord: Coordinator) -> None:
        self.config = config
        self.coord = coord
        self.file = LocalFile(config.db)
        self.node = str((self.file.meta or {}).get("node") or uuid.uuid4().hex[:12])
        self.archive = Recorder(config.archive) if config.archive else None
        #: Set when this role ends: on SIGTERM, a promotion, or a failed task.
        self.end = RoleEnd()
        self.replicator = Replicator(self)
        self._replicating: asyncio.Task[None] | None = None
        self._tasks: Supervisor | None = None
        #: The file was promoted; the leader role takes over in a moment.
        self.promoted = False
        #: What the HA loop said last (automatic failover only).
        self.election = decisions.Said()

    @property
    def url(self) -> str:
        return own_url(self.config)

    @property
    def keepalive(self) -> float:
        """How long a caught-up follower counts as fresh after its last contact: one long
        poll and the grace within which a silent link counts as alive."""
        return self.replicator.fresh_file.keepalive

    @property
    def progress(self) -> Progress:
        return self.replicator.progress

    @property
    def leader(self) -> str:
        """The leader followed now (the replication loop's to change)."""
        return self.replicator.leader

    @property
    def history(self) -> list[dict[str, Any]]:
        """The epochs of the leader followed (as its batches tell)."""
        return self.replicator.history

    @property
    def members(self) -> Members:
        """Every member the leaders told of."""
        return self.replicator.members

    @property
    def transition(self) -> roles.Transition | None:
        """What this node turns into when the role ends (a promotion under way)."""
        return self.end.transition

    async def run(self, stop: asyncio.Event, listener: socket.socket) -> roles.Transition | None:
        """Follow (serving on `listener`) until `stop` (returns None) or until promoted
        (returns the transition)."""
        meta = self.file.meta or {}
        context = {"node": self.node, "role": "follower", "epoch": meta.get("epoch")}
        config.LOG_CONTEXT.set(context)
        if meta.get("role") == "leader":
            await asyncio.to_thread(self.file.close_leader_gate, self.config.leader)
        tls = server_ssl(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
        done = self.end.event
        try:
            async with Supervisor(done) as tasks:
                self._tasks = tasks
                tasks.loop("stop signal", forward_event(stop, done))
                app = FollowerAPI(self).app()
                tasks.task("HTTP server", run_server(app, listener, done, tls))
                self.start_replicating()
                if self.coord.automatic:
                    tasks.loop("HA loop", ha.run_follower(self))
        finally:
            await self.replicator.close()
            self.file.close()
            if self.archive:
                self.archive.close()
            log.info("follower stopped" if self.transition is None else "follower role ended")
        return None if stop.is_set() else self.transition

    def start_replicating(self) -> None:
        assert self._tasks is not None
        work = self.replicator.run(self.end.event)
        self._replicating = self._tasks.loop("replication", work)

    async def stop_replicating(self) -> None:
        if self._replicating is not None:
            self._replicating.cancel()
            await asyncio.gather(self._replicating, return_exceptions=True)

    def eligibility(self) -> tuple[bool, str | None]:
        """May this node be promoted now, and if not, why not."""
        p = self.progress
        if self.archive is not None:
            return False, "an archive (sqlrepl archive) is never promoted"
        if not self.config.candidate:
            return False, "not a candidate (started with --no-candidate)"
        if self.file.db is None or p.position is None:
            return False, "not bootstrapped yet"
        lag = p.lag()
        if lag > self.config.max_lag:
            return False, f"lagging {lag} changes behind its leader (max {self.config.max_lag})"
        return True, None

    @property
    def cluster(self) -> str | None:
        return (self.file.meta or {}).get("cluster")

    def member_info(self, eligible: bool) -> dict[str, Any]:
        """What this node publishes to the coordinator for candidates comparing positions."""
        where = self.progress.position
        return {
            "url": self.url,
            "node": self.node,
            "epoch": where.epoch if where else None,
            "seq": where.seq if where else None,
            "eligible": eligible,
        }

    def repoint(self, url: str) -> None:
        """Follow another leader from now on (the coordinator named it)."""
        self.replicator.repoint(url)

    async def become_leader(self, why: str, epoch: int | None = None) -> Position:
        """Stop replicating and promote this file; the node goes on as the leader."""
        db = self.file.db
        assert db is not None
        self.end.claim(roles.Transition("leader", None, why))  # one promotion at a time
        await self.stop_replicating()
        try:
            where = await db.run(
                roles.promote, db.conn, self.node, self.url, why, time.time(), epoch
            )
        except BaseException:
            self.end.claim(None)  # still a follower: go on replicating
            self.start_replicating()
            raise
        log.warning("promoted to leader of epoch %s from seq %s: %s", where.epoch, where.seq, why)
        # Until the leader role serves, status says what the file now is: a node restarted
        # meanwhile must find this one leading its newer epoch, not a follower.
        self.replicator.promoted(where)
        self.promoted = True
        self.end.pass_on(roles.Transition("leader", None, why))
        return where
