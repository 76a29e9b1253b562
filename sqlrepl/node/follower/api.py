"""The follower's HTTP API: status, snapshots of its file, and promotion."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web

from ...core import quorum, tokens
from ...core.quorum import SyncSet
from ...core.status import NodeStatus
from ...core.wire import FORK_HEADER
from ...errors import ConfigError, SqlreplError, TokenForked
from .. import discovery, health, metrics
from ..client import Client
from ..http import auth_middleware, error, int_param
from ..leader import sync
from ..snapshots import Sessions, serve_snapshot
from .parts import ServedFollower

log = logging.getLogger("sqlrepl.follower")
#: How long a promoted follower waits for the old leader to accept its demotion.
FENCE_TIMEOUT = 2.0
#: How often `GET /wait` looks at the follower's position.
WAIT_POLL = 0.002


class FollowerAPI:
    def __init__(self, follower: ServedFollower) -> None:
        self.follower = follower
        #: Old leaders being told to step down (best effort, outliving this role).
        self.fencing: set[asyncio.Future[bool]] = set()
        self.sessions = Sessions(follower.config.db)

    def app(self) -> web.Application:
        token = self.follower.config.token
        app = web.Application(middlewares=[auth_middleware(token, health.PATHS)])
        health.add_routes(app, self.health)
        app.router.add_get("/wait", self.wait)
        app.router.add_get("/metrics", metrics.handler)
        metrics.serve_role(self.metrics)
        app.router.add_get("/status", self.status)
        app.router.add_get("/snapshot", self.snapshot)
        app.router.add_post("/promote", self.promote)
        app.on_cleanup.append(lambda _: asyncio.to_thread(self.sessions.close))
        return app

    async def status(self, request: web.Request) -> web.Response:
        f = self.follower
        p = f.progress
        eligible, why_not = f.eligibility()
        now = time.time()
        return web.json_response(
            NodeStatus(
                {
                    "role": "leader" if f.promoted else "follower",
                    "url": f.url,
                    "db": str(f.config.db),
                    "node": f.node,
                    "cluster": f.cluster,
                    "epoch": p.position.epoch if p.position else None,
                    "seq": p.position.seq if p.position else None,
                    "leader": f.leader,
                    "leader_seq": p.known_head,
                    "lag": {
                        "changes": p.lag(),
                        "seconds": p.lag_seconds(now, f.keepalive),
                    },
                    "last_contact": round(now - p.last_contact, 3) if p.last_contact else None,
                    "state": p.state,
                    "snapshot": p.transfer.view() if p.transfer else None,
                    "error": p.error,
                    "problem": p.trouble.view(),
                    "last_problem": p.trouble.last,
                    "candidate": f.config.candidate,
                    "eligible": eligible,
                    "why_not": why_not,
                    "gate": "open" if f.promoted else "closed",
                    "history": f.history,
                    "rollback": f.file.rollback,
                    "election": f.election.last,
                }
            )
        )

    def metrics(self) -> metrics.State:
        f, p = self.follower, self.follower.progress
        seconds = p.lag_seconds(time.time(), f.keepalive)
        extra: metrics.State = {
            "sqlrepl_lag_changes": ("Changes behind the newest head known.", p.lag(), ""),
            "sqlrepl_lag_seconds": ("Seconds since it last held its leader's head.", seconds, ""),
            "sqlrepl_replication_stuck": (
                "1 while a replication failure lasts (status names its cause).",
                int(p.trouble.lasting),
                "",
            ),
        }
        where = p.position
        epoch, seq = (where.epoch, where.seq) if where else (None, None)
        return metrics.describe("follower", epoch, seq, False, False, extra)

    def health(self) -> health.Health:
        f, p = self.follower, self.follower.progress
        # A follower that lost its leader still serves reads: staleness is the bound's
        # business (/replica?seconds=), not a failure of this node.
        problem = "not bootstrapped yet" if f.file.db is None or p.position is None else None
        if f.promoted:  # the leader role takes over in a moment: no replica any more
            return health.Health("leader", "promoted: the leader role is starting")
        seconds = p.lag_seconds(time.time(), f.keepalive)
        notes = (str(p.trouble.message),) if p.trouble.lasting else ()
        return health.Health("follower", problem, False, p.lag(), seconds, notes=notes)

    async def wait(self, request: web.Request) -> web.Response:
        """`GET /wait?token=E:S&timeout=SECONDS`: answers once this follower's file holds
        the token (acknowledgements are counted by the leader)."""
        f = self.follower
        try:
            token, _acks, timeout = sync.wait_params(request)
            if "acks" in request.query:
                raise ConfigError(f"acks are counted by the leader ({f.leader})")
        except ConfigError as exc:
            return error(400, str(exc))
        deadline = time.monotonic() + timeout
        while True:
            where = f.progress.position
            try:
                if where is not None and tokens.holds(f.history, where, token):
                    return web.json_response(
                        {"token": tokens.format_token(token), "at": str(where)}
                    )
            except TokenForked as exc:
                return error(409, str(exc), {FORK_HEADER: "1"})
            if time.monotonic() >= deadline:
                return error(
                    504,
                    f"timed out after {timeout:g}s: this follower is at {where}, "
                    f"not yet at token {tokens.format_token(token)}",
                )
            await asyncio.sleep(WAIT_POLL)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        f = self.follower
        if f.file.db is None:
            return web.json_response({"error": "not bootstrapped yet"}, status=503)
        if not _seconds(request.query.get("max_lag", "0")):
            return error(400, "max_lag must be a number of seconds")
        return await serve_snapshot(request, self.sessions, refuse=self._too_stale(request))

    def _too_stale(self, request: web.Request) -> Any:
        """With `max_lag`: refuse a snapshot of this follower while it is staler than that."""
        limit = request.query.get("max_lag")
        f = self.follower

        def why() -> str | None:
            if limit is None:
                return None
            behind = f.progress.lag_seconds(time.time(), f.keepalive)
            if behind <= float(limit):
                return None
            return (
                f"this follower is {behind:.1f} s behind its leader "
                f"(max_lag {float(limit):g} s): refusing a stale snapshot"
            )

        return why

    async def promote(self, request: web.Request) -> web.Response:
        """Become the leader of a new epoch, continuing seq from what was applied."""
        f = self.follower
        force = request.query.get("force") == "1"
        why = request.query.get("why") or "promoted by an operator"
        expect = int_param(request, "expect_seq", -1)
        ok, why_not = f.eligibility()
        where = f.progress.position
        if f.file.db is None or where is None:
            return error(409, "promote refused: not bootstrapped")
        if f.transition is not None:
            return error(409, "promote refused: already handing over")
        if f.archive is not None:  # even forced: promoting it would end the archive
            return error(409, f"promote refused: {why_not}")
        if not ok and not force:
            return error(409, f"promote refused: {why_not}")
        if expect >= 0 and expect != where.seq:
            return error(409, f"promote refused: at seq {where.seq}, expected {expect}")
        old_leader = f.leader
        handover = request.query.get("handover") == "1"
        floor = where.epoch if handover else await self._epoch_floor(force)
        if isinstance(floor, str):
            return error(409, f"promote refused: {floor}")
        info = {"url": f.url, "node": f.node, "cluster": f.cluster}
        epoch = await asyncio.to_thread(f.coord.acquire, info, floor)
        if epoch is None:
            return error(409, "promote refused: another node holds the leader lease")
        # A live old leader closes its gate before this node opens one (no moment with
        # two open gates); one that does not answer in time is tried again afterwards.
        fenced = handover or await self._fence(old_leader, epoch)
        where = await f.become_leader(why, epoch)
        if not fenced:
            # In the background: an old leader that hangs must not hold the answer past
            # the end of this role (its HTTP server then cuts what is in flight).
            fencing = asyncio.ensure_future(self._fence(old_leader, epoch))
            self.fencing.add(fencing)
            fencing.add_done_callback(self.fencing.discard)
        return web.json_response({"url": f.url, "epoch": where.epoch, "seq": where.seq})

    async def _epoch_floor(self, force: bool) -> int | str:
        """The newest epoch any reachable member holds or has seen (a new one goes above
        it), or why promoting now is refused: another node leads, or fewer than a majority
        of the known members answer (with three or more; two nodes trust the operator)."""
        f = self.follower
        assert f.progress.position is not None
        mine = f.progress.position.epoch
        others = f.members.others()
        sync = await asyncio.to_thread(f.coord.sync_set)
        extra = set(sync.members.values()) if sync else set()
        answers = await discovery.survey(others | extra, f.config.token, f.config.client_tls)
        rival = discovery.newest_leader(
            [a for a in answers if a.get("url") != f.leader], f.cluster, mine - 1
        )
        if rival and not force:
            return f"{rival} leads this cluster; follow it"
        known, reachable = len(others) + 1, 1 + len({a["asked"] for a in answers} & others)
        if known >= 3 and reachable * 2 <= known and not force:
            return (
                f"only {reachable} of the {known} known members answer (no majority): another "
                "node may lead unseen; --force to promote anyway"
            )
        if sync is not None:
            waiting = await self._sync_rule(sync, answers)
            if waiting and not force:
                return f"{waiting}; --force to promote anyway and lose them"
            if waiting:
                log.warning("promoted by force: %s", waiting)
        return max(mine, discovery.highest_epoch(answers))

    async def _sync_rule(self, sync: SyncSet, answers: list[dict[str, Any]]) -> str | None:
        """What the rule of synchronous commits (`core.quorum`) says of promoting here."""
        f = self.follower
        assert f.progress.position is not None
        head = await asyncio.to_thread(f.coord.head)
        return quorum.judge(sync, f.node, f.progress.position, answers, head)

    async def _fence(self, old_leader: str, epoch: int) -> bool:
        """Best effort: tell the old leader, if it still runs, to close its gate and rejoin
        as a follower of this node's `epoch`. Did it?"""
        try:
            config = self.follower.config
            async with Client(old_leader, config.token, config.client_tls) as client:
                params = {"leader": self.follower.url, "epoch": epoch}
                await client.post("/demote", params, timeout=FENCE_TIMEOUT)
        except SqlreplError as exc:
            log.info("old leader %s not fenced (%s)", old_leader, exc)
            return False
        log.info("old leader %s demoted itself", old_leader)
        return True


def _seconds(value: str) -> bool:
    try:
        return float(value) >= 0
    except ValueError:
        return False
