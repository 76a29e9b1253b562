"""Handing leadership over without losing a write: switchover, and a leader's stop.

Close the gate, wait (bounded) until the target applied everything, give up the lease,
have the target promote itself, and turn this file into the target's follower. A leader
stopped by SIGTERM (what `systemctl stop` sends) does the same with the most up-to-date
eligible follower, so a planned restart moves the writes elsewhere within milliseconds;
with nobody to hand over to it stops as it is (static), or closes its gate before giving
its lease up (a coordinator that fails over by itself would elect someone else).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from ... import config
from ...coord import Coordinator
from ...core import roles
from ...errors import Refused, SqlreplError
from .. import discovery
from ..client import Client
from ..configs import LeaderConfig
from ..database import Database
from ..supervisor import RoleEnd
from .gate import Leadership, Role, WriteGate
from .retention import Retention

log = logging.getLogger("sqlrepl.leader")
#: How long a stopping leader waits for each follower's status when picking a target.
STATUS_TIMEOUT = 1.0


class Handing(Protocol):
    """What a handover asks of the leader."""

    @property
    def config(self) -> LeaderConfig: ...
    @property
    def url(self) -> str: ...

    coord: Coordinator
    db: Database
    meta: dict[str, Any]
    followers: Retention
    gate: WriteGate
    leadership: Leadership
    end: RoleEnd

    async def refresh(self, now: bool = False) -> int: ...
    async def step_down(self, reason: str, release: bool = True) -> None: ...


async def hand_over(leader: Handing, to: str, force: bool, why: str) -> dict[str, Any]:
    """Make the follower at `to` the leader with nothing lost; raise Refused if it cannot
    (the gate is then open again, as before, once this node holds the lease)."""
    target = await _check_target(leader, to, force, why)
    started = time.monotonic()
    leader.leadership.move(Role.HANDING_OVER)
    try:
        return await _hand_over(leader, to, target, why, started)
    except BaseException:
        gave_up = leader.leadership.role is Role.HANDING_OVER  # the lease still ours
        leader.leadership.move(Role.LEADING if gave_up else Role.STEPPED_DOWN)
        raise


async def _hand_over(
    leader: Handing, to: str, target: str, why: str, started: float
) -> dict[str, Any]:
    await leader.gate.set(False, f"{why} to {to} in progress; retry on the new leader")
    top = await leader.refresh(now=True)  # the real head, even if a schema change waits
    if not await _caught_up(leader, target, top):
        await leader.gate.set(True)
        raise Refused(f"{why} abandoned: {to} did not reach seq {top} in time")
    leader.leadership.move(Role.HANDED_OVER)
    await asyncio.to_thread(leader.coord.release)  # the target takes the leadership
    try:
        async with Client(to, leader.config.token, leader.config.client_tls) as client:
            params = {
                "expect_seq": top,
                "why": f"{why} from {leader.url}",
                "force": 1,
                "handover": 1,
            }
            promoted = await client.post("/promote", params)
    except SqlreplError as exc:
        leader.leadership.move(Role.HANDING_OVER)
        if leader.coord.holds_lease():  # else the HA loop takes the lease again first
            await leader.gate.set(True)
        raise Refused(f"{why} abandoned: {to} did not take over: {exc}") from exc
    await leader.db.run(roles.demote, leader.db.conn, to)
    log.warning("%s: %s leads epoch %s from seq %s", why, to, promoted["epoch"], top)
    return {**promoted, "leader": to, "unavailable_s": round(time.monotonic() - started, 3)}


async def _check_target(leader: Handing, to: str, force: bool, why: str) -> str:
    """The URL the target reports for itself; Refused with the reason if it may not lead."""
    try:
        async with Client(to, leader.config.token, leader.config.client_tls) as client:
            target: dict[str, Any] = await client.status()
    except SqlreplError as exc:
        raise Refused(f"{why} refused: {to} is unknown or unreachable: {exc}") from exc
    if target.get("role") != "follower" or target.get("cluster") != leader.meta["cluster"]:
        raise Refused(f"{why} refused: {to} is not a follower of this cluster")
    lag = int((target.get("lag") or {}).get("changes") or 0)
    if not force and not target.get("candidate"):
        raise Refused(f"{why} refused: {to} is not a candidate (--no-candidate)")
    if not force and lag > config.SWITCHOVER_MAX_LAG:
        raise Refused(f"{why} refused: {to} is lagging {lag} changes behind")
    return str(target.get("url"))


async def _caught_up(leader: Handing, url: str, top: int) -> bool:
    deadline = time.monotonic() + leader.config.switchover_timeout
    while time.monotonic() < deadline:
        if (leader.followers.at(url) or -1) >= top:
            return True
        await asyncio.sleep(0.005)
    return False


async def best_follower(leader: Handing) -> str | None:
    """The most up-to-date eligible follower that answers now (ties: smaller node id)."""
    urls = sorted({url for url, _seq, _seen in leader.followers.followers.values() if url})
    token = leader.config.token
    tls = leader.config.client_tls
    answers = await asyncio.gather(*(discovery.ask(u, token, STATUS_TIMEOUT, tls) for u in urls))
    ready = [
        a
        for a in answers
        if a and a.get("role") == "follower" and a.get("eligible") and a.get("seq") is not None
    ]
    ready.sort(key=lambda a: (-int(a["seq"]), str(a.get("node"))))
    return str(ready[0]["url"]) if ready else None


async def on_stop(leader: Handing) -> bool:
    """A leader asked to stop: hand over if it can. True if it did (the file now follows
    the new leader)."""
    if not leader.leadership.leading:
        return False
    target = await best_follower(leader)
    if target is not None:
        try:
            await hand_over(leader, target, force=False, why="handover on stop")
            return True
        except Refused as exc:
            log.error("%s", exc)
    if leader.coord.automatic:
        # Nobody takes over from us: close the gate before the lease goes, or the
        # coordinator could elect another node while apps still write here.
        await leader.step_down("stopped, with no follower to hand over to")
    else:
        log.info("stopping as the leader: no follower to hand over to")
    return False


async def stop_when(leader: Handing, stop: asyncio.Event) -> None:
    """Once `stop` is set, hand over if possible, then end the role."""
    await stop.wait()
    try:
        await on_stop(leader)
    finally:
        leader.end.event.set()
