"""Automatic failover on etcd: one HA cycle per node every TTL/5, each returning a sentence.

Leader cycle: close the gate first if the lease may have expired (judged by the send time
of the last good renewal, on the monotonic clock: a node frozen past its TTL closes its
gate the moment it runs again); renew; with the lease, keep the gate open; without it,
follow whoever holds the key, or take it again if nobody does.

Follower cycle: publish its position; follow the key's holder; with no holder, race for
the key only if it is an eligible candidate and no reachable eligible peer is further
ahead (ties go to the smaller node id); the winner promotes itself to the key's epoch.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import roles
from .client import Client
from .db import Position
from .errors import PeerUnavailable, SqlreplError

if TYPE_CHECKING:
    from .follower import Follower
    from .leader import Leader

log = logging.getLogger("sqlrepl.ha")


async def run(cycle: Any, node: Any, every: float) -> None:
    """Run `cycle(node)` every `every` seconds, logging each new sentence once."""
    said = ""
    while True:
        try:
            sentence = await cycle(node)
        except SqlreplError as exc:
            sentence = f"HA cycle failed: {exc}"
        if sentence != said:
            log.info("%s", sentence)
            said = sentence
        await asyncio.sleep(every)


async def leader_cycle(leader: Leader) -> str:
    etcd = leader.config.etcd
    assert etcd is not None
    if etcd.lease_id is not None and etcd.lease_may_have_expired():
        await leader.step_down("the leader lease may have expired")
    if etcd.lease_id is not None:
        try:
            alive = await asyncio.to_thread(etcd.renew)
        except PeerUnavailable:
            if etcd.lease_may_have_expired():
                await leader.step_down("etcd unreachable for longer than the lease")
                return "stepped down: etcd unreachable, the lease may have expired"
            return "etcd unreachable; the lease still holds"
        if not alive:
            await leader.step_down("the leader lease was lost")
            return "stepped down: lease lost"
        if not leader.gate_open:
            await leader.set_gate(True)
        return f"leading epoch {leader.position.epoch} with the lease"
    holder = await asyncio.to_thread(etcd.leader)
    if holder is not None and holder.get("url") != leader.url:
        leader.hand_over(
            roles.Transition("follower", holder["url"], "another node holds the lease")
        )
        return f"following {holder['url']}, which holds the lease"
    info = {"url": leader.url, "node": leader.node, "cluster": leader.meta["cluster"]}
    epoch = await asyncio.to_thread(etcd.acquire, info, leader.position.epoch)
    if epoch is None:
        return "lost the race for the lease"
    await leader.take_epoch(epoch, "acquired the leader lease")
    await leader.set_gate(True)
    return f"acquired the lease: leading epoch {epoch}"


async def follower_cycle(follower: Follower) -> str:
    etcd = follower.config.etcd
    assert etcd is not None
    eligible, why_not = follower.eligibility()
    where = follower.progress.position
    await asyncio.to_thread(etcd.publish, follower.node, _member(follower, eligible))
    holder = await asyncio.to_thread(etcd.leader)
    if holder is not None:
        if holder.get("url") == follower.url:
            return "etcd names this node the leader: waiting for its promotion"
        if holder.get("url") != follower.config.leader:
            follower.repoint(str(holder["url"]))
            return f"following {holder['url']} (epoch {holder.get('epoch')})"
        return f"following {holder['url']}"
    if follower.transition is not None:
        return "handing over"
    if not eligible or where is None:
        return f"no leader, and this node may not run: {why_not}"
    better = await _better_peer(follower, where)
    if better:
        return f"no leader; yielding to {better}, which is further ahead"
    info = {"url": follower.url, "node": follower.node, "cluster": follower.cluster}
    epoch = await asyncio.to_thread(etcd.acquire, info, where.epoch)
    if epoch is None:
        return "no leader; another candidate won the race"
    await follower.become_leader(f"won the election at {where}", epoch)
    return f"won the election: leading epoch {epoch} from seq {where.seq}"


def _member(follower: Follower, eligible: bool) -> dict[str, Any]:
    where = follower.progress.position
    return {
        "url": follower.url,
        "node": follower.node,
        "epoch": where.epoch if where else None,
        "seq": where.seq if where else None,
        "eligible": eligible,
    }


async def _better_peer(follower: Follower, mine: Position) -> str | None:
    """A reachable, eligible candidate further ahead than `mine` (asked directly, not etcd)."""
    etcd = follower.config.etcd
    assert etcd is not None
    for member in await asyncio.to_thread(etcd.members):
        if member.get("node") == follower.node or not member.get("url"):
            continue
        try:
            async with Client(str(member["url"]), follower.config.token) as client:
                peer = await client.status(timeout=1.0)
        except SqlreplError:
            continue
        if not peer.get("eligible") or peer.get("seq") is None:
            continue
        theirs = (int(peer["epoch"]), int(peer["seq"]), str(peer.get("node")) < follower.node)
        if theirs > (mine.epoch, mine.seq, False):
            return str(member["url"])
    return None
