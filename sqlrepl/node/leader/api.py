"""The leader's HTTP API: status, batches, snapshots, switchover and demote."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from typing import Protocol

from aiohttp import web

from ... import config
from ...core import roles
from ...core.status import NodeStatus
from ...errors import ConfigError, Refused
from .. import health, metrics
from ..http import auth_middleware, error, int_param
from ..snapshots import Sessions, serve_snapshot
from . import handover, sync
from .batches import BatchServer, BatchSource
from .changes import ChangeLoop
from .disk import DiskProbe
from .gate import Role


class ServedLeader(sync.Syncing, BatchSource, handover.Handing, Protocol):
    """What the leader's HTTP API asks of it."""

    @property
    def node(self) -> str: ...

    disk: DiskProbe
    changes: ChangeLoop

    def problems(self) -> list[str]: ...
    def hand_over(self, transition: roles.Transition) -> None: ...


log = logging.getLogger("sqlrepl.leader")


class LeaderAPI:
    def __init__(self, leader: ServedLeader) -> None:
        self.leader = leader
        self.sessions = Sessions(leader.config.db)

    def app(self) -> web.Application:
        token = self.leader.config.token
        app = web.Application(middlewares=[auth_middleware(token, health.PATHS)])
        health.add_routes(app, self.health)
        app.router.add_get("/wait", functools.partial(sync.wait, self.leader))
        app.router.add_get("/metrics", metrics.handler)
        metrics.serve_role(self.metrics)
        app.router.add_get("/status", self.status)
        batches = BatchServer(self.leader)
        app.router.add_get("/batch", batches.batch)
        app.router.add_get("/snapshot", self.snapshot)
        app.router.add_post("/switchover", self.switchover)
        app.router.add_post("/demote", self.demote)
        app.router.add_post("/settings", self.settings)
        app.on_cleanup.append(lambda _: asyncio.to_thread(self.sessions.close))
        app.on_cleanup.append(lambda _: batches.close())
        return app

    async def status(self, request: web.Request) -> web.Response:
        leader = self.leader
        problems = leader.problems()
        return web.json_response(
            NodeStatus(
                {
                    "role": "leader",
                    "url": leader.url,
                    "db": str(leader.config.db),
                    "cluster": leader.meta["cluster"],
                    "epoch": leader.head.epoch,
                    "seq": leader.head.seq,
                    "followers": leader.followers.report(leader.head.seq),
                    "problems": problems,
                    "error": "; ".join(problems) or None,
                    # The file's real gate (do app writes go through); whether the lease is
                    # valid is reported beside it; `writable` is the one answer of both.
                    "gate": leader.gate.state(),
                    "lease_valid": not leader.lease_doubtful(),
                    "writable": leader.gate.writable(),
                    "leading": leader.leadership.leading,
                    "coordinator": leader.coord.name,
                    "sync_set": leader.followers.sync.view(),
                    "settings": dataclasses.asdict(leader.followers.sync.settings),
                    "node": leader.node,
                    "history": leader.head.history,
                }
            )
        )

    def metrics(self) -> metrics.State:
        leader, acks = self.leader, self.leader.followers.acks
        followers = leader.followers.report(leader.head.seq)
        now = time.monotonic()
        within = config.DEFAULT_POLL_WAIT + config.STALL_GRACE  # a live link's longest silence
        connected = [n for n in acks.at if acks.connected(n, within, now)]
        head = leader.head.seq
        seconds = {url: round(acks.behind(n, head, now), 3) for n, (url, _, _) in acks.at.items()}
        extra: metrics.State = {
            "sqlrepl_followers_connected": ("Followers connected now.", len(connected), ""),
            "sqlrepl_follower_lag_changes": (
                "Changes each follower lacks.",
                {f["url"] or f["node"]: f["lag"] for f in followers},
                "follower",
            ),
            "sqlrepl_follower_lag_seconds": (
                "Seconds since each follower last held the head.",
                seconds,
                "follower",
            ),
        }
        lease = not leader.lease_doubtful()  # (which asks whether the lease is held)
        gate_open = leader.gate.state() == "open"
        return metrics.describe("leader", leader.head.epoch, head, gate_open, lease, extra)

    def health(self) -> health.Health:
        leader = self.leader
        problem = leader.disk.error or leader.changes.locked
        if not leader.leadership.leading:
            problem = problem or f"{leader.leadership.role.value}: not leading"
        why = leader.gate.why_not_writable()
        notes = tuple(leader.problems())
        return health.Health("leader", problem, why is None, why_not_writable=why, notes=notes)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        leader = self.leader
        node, url = request.query.get("node"), request.query.get("url", "")
        return await serve_snapshot(
            request,
            self.sessions,
            lambda where: leader.followers.register(node, url, where.seq),
        )

    async def switchover(self, request: web.Request) -> web.Response:
        """Hand leadership to a follower with zero loss: close the gate, wait until the
        target applied everything, promote it, follow it."""
        to = request.query.get("to", "")
        force = request.query.get("force") == "1"
        try:
            result = await handover.hand_over(self.leader, to, force, "switchover")
        except Refused as exc:
            return error(409, str(exc))
        self.leader.hand_over(roles.Transition("follower", to, f"switchover to {to}"))
        return web.json_response(result)

    async def settings(self, request: web.Request) -> web.Response:
        """Change the cluster's settings (`POST /settings?KEY=VALUE…`); the new ones."""
        if not self.leader.leadership.leading:
            return error(409, "this node is not the leader now: change settings on the leader")
        try:
            new = await self.leader.followers.sync.change_settings(dict(request.query))
        except ConfigError as exc:
            return error(400, str(exc))
        return web.json_response(dataclasses.asdict(new))

    async def demote(self, request: web.Request) -> web.Response:
        """A newer leader fences this one: close the gate, then rejoin as its follower."""
        leader = self.leader
        new_leader = request.query.get("leader", "")
        epoch = int_param(request, "epoch")
        if epoch <= leader.head.epoch:
            mine = leader.head.epoch
            return error(409, f"epoch {epoch} is not newer than this leader's {mine}")
        leader.leadership.move(Role.STEPPED_DOWN)  # ships nothing more, from now
        await leader.gate.close_for_good(f"deposed by {new_leader} (epoch {epoch})")
        leader.hand_over(roles.Transition("follower", new_leader, f"deposed by {new_leader}"))
        return web.json_response({"demoted": leader.url, "epoch": leader.head.epoch})
