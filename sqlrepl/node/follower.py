"""The follower role: what it knows of itself and its leader, promotion, the role's tasks.

Pulling and applying batches lives in `replication`, the HTTP API in `follower_http`,
the HA loop in `ha`. Every background task runs under one `Supervisor`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..config import STALL_GRACE, own_url, server_ssl
from ..coord import Coordinator
from ..core import roles
from ..core.positions import Position
from . import freshness, ha
from .archive import ArchiveConfig, Recorder
from .bootstrap import LocalFile
from .follower_http import FollowerAPI
from .http import forward_event, run_server
from .progress import Progress
from .replication import Replicator
from .supervisor import Supervisor

log = logging.getLogger("sqlrepl.follower")


@dataclass(frozen=True)
class FollowerConfig:
    db: Path
    leader: str
    host: str
    port: int
    token: str | None = None
    wait: int = config.DEFAULT_POLL_WAIT
    #: May this node be promoted (by `promote`, `switchover` or the coordinator)?
    candidate: bool = True
    #: Most changes a candidate may lag its leader by and still be promoted.
    max_lag: int = config.DEFAULT_MAX_LAG
    #: Coordinator URL (None: static) and the lease TTL.
    coordinator: str | None = None
    ttl: int = config.DEFAULT_TTL
    #: The URL others reach this node at (default: from the listen address).
    advertise: str | None = None
    #: Serve https with this certificate and key; with `tls_client_ca`, only to clients
    #: whose certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Also keep every batch and periodic snapshots there (`sqlrepl archive`).
    archive: ArchiveConfig | None = None


class Follower:
    """The follower role. Its components own their state: `LocalFile` the file (its
    connection, what it is, its rollback), `Replicator` the progress, the leader followed
    and its history, `Recorder` the archive."""

    def __init__(self, config: FollowerConfig, coord: Coordinator, listener: socket.socket) -> None:
        self.config = config
        self.coord = coord
        self.listener = listener
        self.file = LocalFile(config.db)
        self.node = str((self.file.meta or {}).get("node") or uuid.uuid4().hex[:12])
        #: The freshness proof beside the file, for apps that read it directly.
        self.fresh_file = freshness.FreshnessFile(config.db, self.keepalive)
        self.archive = Recorder(config.archive) if config.archive else None
        self.done = asyncio.Event()
        self.transition: roles.Transition | None = None
        self.replicator = Replicator(self)
        self._replicating: asyncio.Task[None] | None = None
        self._tasks: Supervisor | None = None
        #: This role closed its leader file's gate at start (reopened if the rejoin is refused).
        self.gate_closed_here = False
        #: The file was promoted; the leader role takes over in a moment.
        self.promoted = False

    @property
    def url(self) -> str:
        return own_url(self.config)

    @property
    def keepalive(self) -> float:
        """How long a caught-up follower counts as fresh after its last contact: one long
        poll and the grace within which a silent link counts as alive."""
        return self.config.wait + STALL_GRACE

    @property
    def progress(self) -> Progress:
        return self.replicator.progress

    @property
    def leader(self) -> str:
        """The leader followed now (the replication loop's to change)."""
        return self.replicator.leader

    async def run(self, stop: asyncio.Event) -> roles.Transition | None:
        """Follow until `stop` (returns None) or until promoted (returns the transition)."""
        meta = self.file.meta or {}
        config.LOG_CONTEXT.update(node=self.node, role="follower", epoch=meta.get("epoch"))
        if meta.get("role") == "leader":
            closed = await asyncio.to_thread(self.file.close_leader_gate, self.config.leader)
            self.gate_closed_here = closed
        tls = server_ssl(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
        try:
            async with Supervisor(self.done) as tasks:
                self._tasks = tasks
                tasks.loop("stop signal", forward_event(stop, self.done))
                app = FollowerAPI(self).app()
                tasks.task("HTTP server", run_server(app, self.listener, self.done, tls))
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
        self._replicating = self._tasks.loop("replication", self.replicator.run(self.done))

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
        self.transition = roles.Transition("leader", None, why)  # one promotion at a time
        await self.stop_replicating()
        try:
            where = await db.run(
                roles.promote, db.conn, self.node, self.url, why, time.time(), epoch
            )
        except BaseException:
            self.transition = None  # still a follower: go on replicating
            self.start_replicating()
            raise
        log.warning("promoted to leader of epoch %s from seq %s: %s", where.epoch, where.seq, why)
        # Until the leader role serves, status says what the file now is: a node restarted
        # meanwhile must find this one leading its newer epoch, not a follower.
        self.replicator.promoted(where)
        self.promoted = True
        asyncio.get_running_loop().call_later(0.05, self.done.set)
        return where
