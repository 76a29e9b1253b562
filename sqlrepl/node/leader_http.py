"""The leader's HTTP API: status, batches, snapshots, switchover and demote."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import config
from ..core import roles
from ..errors import SqlreplError
from .batches import BatchServer
from .client import Client
from .http import auth_middleware, error, int_param
from .snapshots import serve_snapshot

if TYPE_CHECKING:
    from .leader import Leader

log = logging.getLogger("sqlrepl.leader")


class LeaderAPI:
    def __init__(self, leader: Leader) -> None:
        self.leader = leader

    def app(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.leader.config.token)])
        app.router.add_get("/status", self.status)
        app.router.add_get("/batch", BatchServer(self.leader).batch)
        app.router.add_get("/snapshot", self.snapshot)
        app.router.add_post("/switchover", self.switchover)
        app.router.add_post("/demote", self.demote)
        return app

    async def status(self, request: web.Request) -> web.Response:
        leader = self.leader
        return web.json_response(
            {
                "role": "leader",
                "url": leader.url,
                "db": str(leader.config.db),
                "cluster": leader.meta["cluster"],
                "epoch": leader.position.epoch,
                "seq": leader.head,
                "followers": leader.retention.report(leader.head),
                "problems": leader.problems,
                "error": "; ".join(leader.problems) or None,
                # The file's real gate; whether the lease is valid is reported beside it.
                "gate": "open" if leader.gate_open else "closed",
                "lease_valid": not leader.lease_doubtful(),
                "leading": leader.leading,
                "coordinator": leader.coord.name,
                "node": leader.node,
                "history": leader.history,
            }
        )

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        leader = self.leader
        node, url = request.query.get("node"), request.query.get("url", "")
        return await serve_snapshot(
            request,
            leader.db,
            leader.config.db,
            lambda where: leader.retention.register(node, url, where.seq),
        )

    async def switchover(self, request: web.Request) -> web.Response:
        """Hand leadership to a follower with zero loss: close the gate, wait until the
        target applied everything, promote it, follow it."""
        leader = self.leader
        to = request.query.get("to", "")
        target = await self._switchover_target(to, request.query.get("force") == "1")
        if isinstance(target, web.Response):
            return target
        started = time.monotonic()
        await leader.set_gate(False, f"switchover to {to} in progress; retry on the new leader")
        top = await leader.refresh()
        if not await self._caught_up(target, top):
            await leader.set_gate(True)
            return error(409, f"switchover abandoned: {to} did not reach seq {top} in time")
        leader.leading = False
        await asyncio.to_thread(leader.coord.release)  # the target takes the leadership
        try:
            async with Client(to, leader.config.token) as client:
                params = {"expect_seq": top, "why": f"switchover from {leader.url}", "force": 1}
                promoted = await client.post("/promote", params)
        except SqlreplError as exc:
            leader.leading = True
            await leader.set_gate(True)
            return error(409, f"switchover abandoned: {to} did not take over: {exc}")
        await leader.db.run(roles.demote, leader.db.conn, to)
        leader.hand_over(roles.Transition("follower", to, f"switchover to {to}"))
        log.warning("switchover: %s leads epoch %s from seq %s", to, promoted["epoch"], top)
        return web.json_response(
            {**promoted, "leader": to, "unavailable_s": round(time.monotonic() - started, 3)}
        )

    async def _switchover_target(self, to: str, force: bool) -> str | web.Response:
        """The URL the target reports for itself, or the refusal to answer with."""
        leader = self.leader
        try:
            async with Client(to, leader.config.token) as client:
                target: dict[str, Any] = await client.status()
        except SqlreplError as exc:
            return _refused(f"{to} is unknown or unreachable: {exc}")
        if target.get("role") != "follower" or target.get("cluster") != leader.meta["cluster"]:
            return _refused(f"{to} is not a follower of this cluster")
        lag = int((target.get("lag") or {}).get("changes") or 0)
        if not force and not target.get("candidate"):
            return _refused(f"{to} is not a candidate (--no-candidate)")
        if not force and lag > config.SWITCHOVER_MAX_LAG:
            return _refused(f"{to} is lagging {lag} changes behind")
        return str(target.get("url"))

    async def _caught_up(self, url: str, top: int) -> bool:
        deadline = time.monotonic() + self.leader.config.switchover_timeout
        while time.monotonic() < deadline:
            if (self.leader.retention.at(url) or -1) >= top:
                return True
            await asyncio.sleep(0.01)
        return False

    async def demote(self, request: web.Request) -> web.Response:
        """A newer leader fences this one: close the gate, then rejoin as its follower."""
        leader = self.leader
        new_leader = request.query.get("leader", "")
        epoch = int_param(request, "epoch")
        if epoch <= leader.position.epoch:
            mine = leader.position.epoch
            return error(409, f"epoch {epoch} is not newer than this leader's {mine}")
        leader.leading = False
        await leader.set_gate(False, f"deposed by {new_leader} (epoch {epoch})")
        leader.hand_over(roles.Transition("follower", new_leader, f"deposed by {new_leader}"))
        return web.json_response({"demoted": leader.url, "epoch": leader.position.epoch})


def _refused(reason: str) -> web.Response:
    return error(409, f"switchover refused: {reason}")
