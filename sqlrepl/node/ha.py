"""The HA loop: every cycle builds a view, asks `core.decisions` what to do, carries it
out and logs the sentence that explains it (once, when it changes).

It runs only with a coordinator that fails over by itself (etcd). An unexpected error in
a leader's cycle is treated as "this node may not hold the lease": the gate closes
(retrying while an app holds the file's write lock) and the loop keeps cycling, so a
renewed lease reopens it. Nothing here ends silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core import decisions
from ..core.decisions import Action, Do, FollowerView, LeaderView
from ..core.positions import Position
from ..core.roles import Transition
from ..errors import PeerUnavailable, SqlreplError
from .client import Client

if TYPE_CHECKING:
    from .follower import Follower
    from .leader import Leader

log = logging.getLogger("sqlrepl.ha")
#: How long a candidate waits for a peer's status when comparing positions.
PEER_TIMEOUT = 1.0


async def _run(
    cycle: Callable[[], Awaitable[str]], failed: Callable[[str], Awaitable[str]], every: float
) -> None:
    said = ""
    while True:
        try:
            sentence = await cycle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, SqlreplError):
                log.exception("HA cycle failed unexpectedly")
            sentence = await failed(f"HA cycle failed: {exc}")
        if sentence != said:
            log.info("%s", sentence)
            said = sentence
        await asyncio.sleep(every)


async def run_leader(leader: Leader) -> None:
    async def failed(why: str) -> str:
        try:
            await leader.step_down(why, release=False)
        except Exception:
            log.exception("could not close the write gate after a failed HA cycle")
        return f"{why}: this node may not hold the lease, write gate closed"

    await _run(lambda: leader_cycle(leader), failed, leader.coord.loop_wait)


async def run_follower(follower: Follower) -> None:
    async def failed(why: str) -> str:
        return why

    await _run(lambda: follower_cycle(follower), failed, follower.coord.loop_wait)


async def leader_view(leader: Leader) -> LeaderView:
    coord = leader.coord
    base = LeaderView(
        leader.url,
        leader.position.epoch,
        leader.gate_open,
        decisions.NONE,
        handing_over=leader.handing_over,
    )
    if coord.holds_lease():
        if coord.lease_may_have_expired():
            return replace(base, lease=decisions.EXPIRED)  # gate first, before any I/O
        try:
            alive = await asyncio.to_thread(coord.renew)
            renewal = decisions.ALIVE if alive else decisions.LOST
        except PeerUnavailable:
            renewal = decisions.UNREACHABLE
        expired = renewal != decisions.ALIVE and coord.lease_may_have_expired()
        lease = decisions.EXPIRED if expired else decisions.HELD
        return replace(base, lease=lease, renewal=renewal)
    holder = await asyncio.to_thread(coord.leader)
    return replace(base, holder=str(holder["url"]) if holder else None)


async def leader_cycle(leader: Leader) -> str:
    action = decisions.decide_leader(await leader_view(leader))
    return await carry_out_leader(leader, action)


async def carry_out_leader(leader: Leader, action: Action) -> str:
    if action.do is Do.STEP_DOWN:
        await leader.step_down(action.sentence.removeprefix("stepped down: "))
    elif action.do is Do.OPEN_GATE:
        await leader.set_gate(True)
    elif action.do is Do.FOLLOW:
        leader.hand_over(Transition("follower", action.target, "another node holds the lease"))
    elif action.do is Do.ACQUIRE:
        info = {"url": leader.url, "node": leader.node, "cluster": leader.meta["cluster"]}
        epoch = await asyncio.to_thread(leader.coord.acquire, info, leader.position.epoch)
        if epoch is None:
            return "lost the race for the lease"
        await leader.take_epoch(epoch, "acquired the leader lease")
        await leader.set_gate(True)
        return f"acquired the lease: leading epoch {epoch}"
    return action.sentence


async def follower_view(follower: Follower) -> FollowerView:
    coord = follower.coord
    eligible, why_not = follower.eligibility()
    where = follower.progress.position
    await asyncio.to_thread(coord.publish, follower.node, follower.member_info(eligible))
    view = FollowerView(
        url=follower.url,
        following=follower.config.leader,
        holder=await asyncio.to_thread(coord.leader),
        handing_over=follower.transition is not None,
        eligible=eligible,
        why_not=why_not,
        position=where,
    )
    if decisions.needs_peers(view) and where is not None:
        return replace(view, better_peer=await better_peer(follower, where))
    return view


async def follower_cycle(follower: Follower) -> str:
    action = decisions.decide_follower(await follower_view(follower))
    if action.do is Do.REPOINT and action.target:
        follower.repoint(action.target)
    elif action.do is Do.ACQUIRE:
        where = follower.progress.position
        assert where is not None
        info = {"url": follower.url, "node": follower.node, "cluster": follower.cluster}
        epoch = await asyncio.to_thread(follower.coord.acquire, info, where.epoch)
        if epoch is None:
            return "no leader; another candidate won the race"
        await follower.become_leader(f"won the election at {where}", epoch)
        return f"won the election: leading epoch {epoch} from seq {where.seq}"
    return action.sentence


async def better_peer(follower: Follower, mine: Position) -> str | None:
    """A reachable, eligible candidate further ahead than `mine` (asked directly)."""
    for member in await asyncio.to_thread(follower.coord.members):
        if member.get("node") == follower.node or not member.get("url"):
            continue
        try:
            async with Client(str(member["url"]), follower.config.token) as client:
                peer = await client.status(timeout=PEER_TIMEOUT)
        except SqlreplError:
            continue
        if decisions.further_ahead(peer, mine, follower.node):
            return str(member["url"])
    return None
