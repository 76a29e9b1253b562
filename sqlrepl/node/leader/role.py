"""The leader role: its components and the role's tasks.

Each component owns its state and is changed only through its methods: `WriteGate` and
`Leadership` (may apps write here), `DiskProbe`, `SchemaSync` (capture in step with the
schema), `ChangeLoop` (file events), `LogHead` (the head followers are sent), `Retention`
and `Acks` (the followers). HTTP handlers live in `api` and `batches`, the HA loop
in `ha`, handovers in `handover`. Every background task runs under one `Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
import uuid
from typing import Any

from ... import config
from ...config import own_url, server_ssl
from ...coord import Coordinator
from ...core import capture, internals, roles
from ...core.cluster import ClusterSettings
from ...core.db import connect, read_meta, use_wal
from ...core.positions import log_head
from ...errors import SqlreplError
from .. import ha
from ..configs import LeaderConfig
from ..database import Database, patiently
from ..http import run_server
from ..members import Members
from ..supervisor import RoleEnd, Supervisor
from . import handover, identity, sync
from .api import LeaderAPI
from .changes import ChangeLoop
from .ddl import SchemaSync
from .disk import DiskProbe
from .gate import Leadership, Role, WriteGate
from .head import LogHead
from .retention import Retention
from .syncset import SyncKeeper

log = logging.getLogger("sqlrepl.leader")
#: How long status lists a rebuild of sqlrepl's dropped tables, at least.
REBUILT_SHOWN_S = 10.0


class Leader:
    def __init__(self, config: LeaderConfig, coord: Coordinator) -> None:
        self.config = config
        self.coord = coord
        conn = connect(config.db)
        identity.check(config.db, internals.cluster_of(conn))
        use_wal(conn)
        position = patiently(lambda: capture.install(conn, log_limit=config.log_limit), config.db)
        self.meta = read_meta(conn)
        identity.remember(config.db, str(self.meta["cluster"]))
        self.meta["node"] = str(self.meta.get("node") or uuid.uuid4().hex[:12])
        self.db = Database(conn)
        self.head = LogHead(position, roles.history(conn))
        self.schema = SchemaSync(conn, self._identity_now, config.log_limit)
        seed = ClusterSettings(config.min_sync_replicas, config.max_replica_lag)
        keeper = functools.partial(
            SyncKeeper, coord, self.node, self.head, drop_after=config.ttl, seed=seed
        )
        self.followers = Retention(config.retention, Members(config.db, self.url), keeper)
        self.leadership = Leadership()
        self.disk = DiskProbe(config.db)
        self.gate = WriteGate(
            self.db,
            self.leadership,
            self.disk,
            lambda: not self.lease_doubtful(),
            sync.initial_hold(config.min_sync_replicas),
        )
        self.changes = ChangeLoop(
            config.db, self.schema.deferral, self.followers.acks.hurry, self.refresh
        )
        #: Set when this role ends: on SIGTERM, a handover, or a failed task.
        self.end = RoleEnd()

    @property
    def url(self) -> str:
        return own_url(self.config)

    @property
    def node(self) -> str:
        return str(self.meta["node"])

    async def run(self, stop: asyncio.Event, listener: socket.socket) -> roles.Transition | None:
        """Lead (serving on `listener`) until `stop` (returns None) or until leadership
        passes on (returns where to)."""
        config.LOG_CONTEXT.set({"node": self.node, "role": "leader", "epoch": self.head.epoch})
        await self.db.run(self.schema.report_problems, self.db.conn)
        await asyncio.to_thread(self.coord.check_config, self.meta["cluster"])
        settings = await self.followers.sync.load_settings()
        if self.gate.hold is None and settings.min_sync_replicas > 0:
            await self.gate.hold_shut(sync.initial_hold(settings.min_sync_replicas) or "")
        if self.coord.holds_lease() != self.gate.is_open:
            await self.gate.set(self.coord.holds_lease(), "waiting for the leader lease")
        if self.gate.hold is not None and self.gate.is_open:  # closed before anyone is told
            await self.gate.set(False, self.gate.hold, held=True)
        log.info(
            "leading %s on %s: cluster %s, epoch %s, seq %s",
            self.config.db,
            self.url,
            self.meta["cluster"],
            self.head.epoch,
            self.head.seq,
        )
        self.changes.start()
        try:
            await self._supervise(stop, listener)
        finally:
            self.changes.stop()
            self.db.close()
            if self.end.transition is None:
                with contextlib.suppress(SqlreplError):
                    await asyncio.to_thread(self.coord.release)  # others need not wait the TTL
            log.info("leader stopped" if self.end.transition is None else "leader role ended")
        return None if stop.is_set() else self.end.transition

    async def _supervise(self, stop: asyncio.Event, listener: socket.socket) -> None:
        tls = server_ssl(self.config.tls_cert, self.config.tls_key, self.config.tls_client_ca)
        async with Supervisor(self.end.event) as tasks:
            tasks.loop("stop signal", handover.stop_when(self, stop))
            tasks.loop("change loop", self.changes.run())
            tasks.loop("disk check", self.disk.watch())
            tasks.task("batch waiters", self._release_waiters())
            tasks.loop("sync set", self.followers.sync.run())
            if self.coord.automatic:
                tasks.loop("HA loop", ha.run_leader(self))
            tasks.loop("sync replicas", sync.enforce_min_replicas(self))
            app = LeaderAPI(self).app()
            tasks.task("HTTP server", run_server(app, listener, self.end.event, tls))

    def lease_doubtful(self) -> bool:
        """The lease may have expired (e.g. just after a freeze): ship nothing; the HA
        cycle is about to close the gate."""
        return not self.coord.holds_lease() or self.coord.lease_may_have_expired()

    async def step_down(self, reason: str, release: bool = True) -> None:
        """Close the gate and ship nothing more; give the lease up unless told not to."""
        await self.gate.close_for_good(f"this node is no longer the leader: {reason}")
        if self.leadership.move(Role.STEPPED_DOWN):
            log.warning("stepped down: %s", reason)
        if release:
            with contextlib.suppress(SqlreplError):
                await asyncio.to_thread(self.coord.release)

    async def take_epoch(self, epoch: int, why: str) -> None:
        """Lead a new epoch from the current head (re-elected after stepping down)."""
        conn = self.db.conn
        position = await self.db.run(roles.new_epoch, conn, epoch, why, self.url, time.time())
        self.head.new_epoch(position, await self.db.run(roles.history, conn))
        self.leadership.move(Role.LEADING)
        config.log_context()["epoch"] = epoch  # the role's own context, for its tasks

    def hand_over(self, transition: roles.Transition) -> None:
        """End this role shortly (after the current response is sent)."""
        self.end.pass_on(transition)

    async def refresh(self, now: bool = False) -> int:
        """Sync capture with the schema if it moved (when the deferral says so, or `now`:
        until then the head stays where it was); publish the new head to waiters."""
        top = await self.db.run(self._sync_and_head, now)
        if top is not None:
            await self.head.publish(top)
        return self.head.seq

    def problems(self) -> list[str]:
        """What status reports: what cannot be replicated, and what keeps writes out."""
        extra = [self.disk.error, self.changes.locked, self.gate.hold, self._resyncing()]
        extra.append(self.followers.sync.problem)
        return [*self.schema.problems, *[p for p in extra if p]]

    def _resyncing(self) -> str | None:
        """After sqlrepl's dropped tables were rebuilt, what was said stays listed for
        REBUILT_SHOWN_S and while followers connected now have not resynced past it."""
        if self.schema.rebuilt is None:
            return None
        said, head, when = self.schema.rebuilt
        recent = time.monotonic() - when < REBUILT_SHOWN_S
        return said if recent or self.followers.acks.short_of(head, config.MAX_POLL_WAIT) else None

    async def _release_waiters(self) -> None:
        """When the role ends, answer every held batch request at once."""
        await self.end.event.wait()
        await self.head.close()

    def _sync_and_head(self, now: bool = False) -> int | None:
        """In the database thread: the log's head, once capture is in step with the
        schema (None while a sync waits for a quiet moment, unless `now`)."""
        return log_head(self.db.conn) if self.schema.catch_up(self.db.conn, now) else None

    def _identity_now(self) -> tuple[dict[str, Any], int]:
        """What sqlrepl's tables are rebuilt with if an app drops them, and the head."""
        meta = {
            **self.meta,
            "role": "leader",
            "epoch": self.head.epoch,
            "history": json.dumps(self.head.history),
        }
        return meta, self.head.seq
