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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config
from ..config import STALL_GRACE, own_url, server_ssl
from ..coord import Coordinator
from ..core import roles
from ..core.positions import Position
from . import bootstrap, freshness, ha
from .archive import ArchiveConfig, Recorder
from .database import Database
from .follower_http import FollowerAPI
from .http import forward_event, run_server
from .replication import Replicator
from .supervisor import Supervisor
from .transfer import Meter

log = logging.getLogger("sqlrepl.follower")


@dataclass
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


@dataclass
class Progress:
    """What the follower knows of itself and its leader, for /status."""

    position: Position | None = None
    leader_head: int | None = None
    #: The newest head a leader published to the coordinator (etcd), on our epoch or later:
    #: a follower cut off from its leader still learns how far behind it is.
    published_head: int | None = None
    last_contact: float | None = None
    #: The last instant this follower knew it held everything its leader had.
    fresh_at: float | None = None
    started: float = field(default_factory=time.time)
    state: str = "starting"
    error: str | None = None
    #: A snapshot download under way: bytes done of how many.
    transfer: Meter | None = None

    def saw_leader(self, head: int) -> None:
        now = time.time()
        self.leader_head = head
        self.last_contact = now
        if self.position is not None and self.position.seq >= (self.known_head or 0):
            self.fresh_at = now

    def saw_published(self, head: dict[str, Any] | None) -> None:
        """Take the head the leader last published (ignored if from an older epoch)."""
        seq, epoch = (head or {}).get("seq"), int((head or {}).get("epoch") or 0)
        ours = self.position is not None and epoch >= self.position.epoch
        self.published_head = int(seq) if ours and seq is not None else None

    @property
    def known_head(self) -> int | None:
        """The newest head of the leader this follower knows of, from any source."""
        heads = [h for h in (self.leader_head, self.published_head) if h is not None]
        return max(heads) if heads else None

    def lag(self) -> int:
        """Changes behind the newest head known (0 before anything is known)."""
        seq = self.position.seq if self.position else 0
        return max((self.known_head or 0) - seq, 0)

    def lag_seconds(self, now: float, keepalive: float) -> float:
        """How old the newest state this follower knows it holds is: 0 while it was caught
        up at its last contact, no older than one keep-alive, and knows of nothing newer;
        otherwise the time since it last was (it grows while the leader is out of reach)."""
        since = self.fresh_at if self.fresh_at is not None else self.started
        lag = freshness.lag_seconds(since, self.fresh_at is None or self.lag() > 0, keepalive, now)
        return lag if lag is not None else round(now - since, 3)


class Follower:
    def __init__(self, config: FollowerConfig, coord: Coordinator, listener: socket.socket) -> None:
        self.config = config
        self.coord = coord
        self.listener = listener
        self.tls = server_ssl(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.url = own_url(config)
        self.meta = roles.check_existing(config.db, leaders_too=True)
        self.node = str((self.meta or {}).get("node") or uuid.uuid4().hex[:12])
        self.progress = Progress()
        #: How long a caught-up follower counts as fresh after its last contact: one long
        #: poll and the grace within which a silent link counts as alive.
        self.keepalive = config.wait + STALL_GRACE
        #: The freshness proof beside the file, for apps that read it directly.
        self.fresh_file = freshness.FreshnessFile(config.db, self.keepalive)
        self.db: Database | None = None
        self.archive = Recorder(config.archive) if config.archive else None
        self.history: list[dict[str, Any]] = []
        #: The rollback file written when this node rejoined with divergent changes.
        self.rollback: str | None = None
        self.done = asyncio.Event()
        self.transition: roles.Transition | None = None
        self.replicator = Replicator(self)
        self._replicating: asyncio.Task[None] | None = None
        self._tasks: Supervisor | None = None
        #: Peers seen in the coordinator: node -> (what it published, when seen, monotonic).
        self.peers: dict[str, tuple[dict[str, Any], float]] = {}
        #: This role closed its leader file's gate at start (reopened if the rejoin is refused).
        self.gate_closed_here = False
        #: The file was promoted; the leader role takes over in a moment.
        self.promoted = False

    async def run(self, stop: asyncio.Event) -> roles.Transition | None:
        """Follow until `stop` (returns None) or until promoted (returns the transition)."""
        epoch = (self.meta or {}).get("epoch")
        config.LOG_CONTEXT.update(node=self.node, role="follower", epoch=epoch)
        if (self.meta or {}).get("role") == "leader":
            self.gate_closed_here = await asyncio.to_thread(bootstrap.close_leader_gate, self)
        try:
            async with Supervisor(self.done) as tasks:
                self._tasks = tasks
                tasks.loop("stop signal", forward_event(stop, self.done))
                app = FollowerAPI(self).app()
                tasks.task("HTTP server", run_server(app, self.listener, self.done, self.tls))
                self.start_replicating()
                if self.coord.automatic:
                    tasks.loop("HA loop", ha.run_follower(self))
        finally:
            await self.replicator.close()
            if self.db:
                self.db.close()
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
        if self.db is None or p.position is None:
            return False, "not bootstrapped yet"
        lag = p.lag()
        if lag > self.config.max_lag:
            return False, f"lagging {lag} changes behind its leader (max {self.config.max_lag})"
        return True, None

    @property
    def cluster(self) -> str | None:
        return (self.meta or {}).get("cluster")

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
        log.warning("now following %s (was %s)", url, self.config.leader)
        self.config.leader = url
        self.replicator.repoint(url)

    async def become_leader(self, why: str, epoch: int | None = None) -> Position:
        """Stop replicating and promote this file; the node goes on as the leader."""
        assert self.db is not None
        self.transition = roles.Transition("leader", None, why)  # one promotion at a time
        await self.stop_replicating()
        try:
            where = await self.db.run(
                roles.promote, self.db.conn, self.node, self.url, why, time.time(), epoch
            )
        except BaseException:
            self.transition = None  # still a follower: go on replicating
            self.start_replicating()
            raise
        log.warning("promoted to leader of epoch %s from seq %s: %s", where.epoch, where.seq, why)
        # Until the leader role serves, status says what the file now is: a node restarted
        # meanwhile must find this one leading its newer epoch, not a follower.
        self.progress.position, self.promoted = where, True
        asyncio.get_running_loop().call_later(0.05, self.done.set)
        return where
