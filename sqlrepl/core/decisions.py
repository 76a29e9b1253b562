"""HA decisions: a view of the cluster in, an action and the sentence that explains it out.

Pure functions (Patroni's model): the HA loop (`node/ha.py`) builds a view from the
coordinator and the node, asks here what to do, carries it out and logs the sentence.
Every branch is unit-tested by its sentence.

Leader: close the gate first if the lease may have expired (judged on the monotonic
clock from the send time of the last good renewal, so a node frozen past its TTL closes
its gate the moment it runs again); step down and stay down while its disk cannot take
writes; renew; with the lease keep the gate open; without it, follow whoever holds the
key, or take it again if nobody does.

Follower: follow the key's holder; with no holder, race for the key only if this node is
an eligible candidate, no reachable eligible peer is further ahead (ties go to the
smaller node id) and the rule of synchronous commits (`quorum`) is met; the winner
promotes itself to the key's epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from .positions import Position


class Do(Enum):
    """What the HA loop carries out."""

    NOTHING = "nothing"
    STEP_DOWN = "step down"  # close the gate, ship nothing, give the lease up
    OPEN_GATE = "open the gate"
    FOLLOW = "follow"  # end the leader role: follow `target`
    REPOINT = "repoint"  # a follower: follow `target` from now on
    ACQUIRE = "acquire"  # race for the leader key, then lead its epoch


@dataclass(frozen=True)
class Action:
    do: Do
    sentence: str
    target: str | None = None


#: A leader's lease, as its own clock and its last renewal attempt see it.
HELD, EXPIRED, NONE = "held", "expired", "none"
#: The answer to a renewal: still alive, lost in the coordinator, or no answer at all.
ALIVE, LOST, UNREACHABLE = "alive", "lost", "unreachable"


@dataclass(frozen=True)
class LeaderView:
    url: str
    epoch: int
    gate_open: bool
    #: HELD, EXPIRED (the clock says it may have lapsed) or NONE.
    lease: str
    #: With a held lease: ALIVE, LOST or UNREACHABLE (None: not tried, e.g. EXPIRED first).
    renewal: str | None = None
    #: Without a lease: the URL of the leader key's holder (None: nobody holds it).
    holder: str | None = None
    #: A handover (switchover, stop) is under way: it alone moves the gate and the lease.
    handing_over: bool = False
    #: Why this node cannot write its database now (full, read-only or failing disk).
    disk_error: str | None = None


def decide_leader(v: LeaderView) -> Action:
    if v.handing_over:
        return Action(Do.NOTHING, "handing over: the gate stays closed until it is done")
    if v.lease == EXPIRED:
        if v.renewal == UNREACHABLE:
            return Action(
                Do.STEP_DOWN, "stepped down: etcd unreachable, the lease may have expired"
            )
        return Action(Do.STEP_DOWN, "stepped down: the leader lease may have expired")
    if v.disk_error is not None:
        if v.lease == HELD:
            return Action(Do.STEP_DOWN, f"stepped down: {v.disk_error}")
        return Action(Do.NOTHING, f"not leading while the disk fails: {v.disk_error}")
    if v.lease == HELD:
        if v.renewal == LOST:
            return Action(Do.STEP_DOWN, "stepped down: lease lost")
        if v.renewal == UNREACHABLE:
            return Action(Do.NOTHING, "etcd unreachable; the lease still holds")
        if not v.gate_open:
            return Action(Do.OPEN_GATE, f"leading epoch {v.epoch} with the lease: gate opened")
        return Action(Do.NOTHING, f"leading epoch {v.epoch} with the lease")
    if v.holder is not None and v.holder != v.url:
        return Action(Do.FOLLOW, f"following {v.holder}, which holds the lease", v.holder)
    return Action(Do.ACQUIRE, "no lease and no other holder: taking the leader key")


@dataclass(frozen=True)
class FollowerView:
    url: str
    #: The leader this follower pulls from now.
    following: str
    #: The leader key's holder ({"url", "epoch", …}) or None.
    holder: dict[str, Any] | None
    handing_over: bool
    eligible: bool
    why_not: str | None
    position: Position | None
    #: With no holder: a reachable eligible peer further ahead (None: none).
    better_peer: str | None = None
    #: With no holder: what the rule of synchronous commits waits for (None: nothing).
    waiting: str | None = None


def needs_peers(v: FollowerView) -> bool:
    """Does deciding need the peers' positions (asked over the network)?"""
    return v.holder is None and not v.handing_over and v.eligible and v.position is not None


def decide_follower(v: FollowerView) -> Action:
    if v.holder is not None:
        url = str(v.holder.get("url"))
        if url == v.url:
            return Action(Do.NOTHING, "etcd names this node the leader: waiting for its promotion")
        if url != v.following:
            return Action(Do.REPOINT, f"following {url} (epoch {v.holder.get('epoch')})", url)
        return Action(Do.NOTHING, f"following {url}")
    if v.handing_over:
        return Action(Do.NOTHING, "handing over")
    if not v.eligible or v.position is None:
        return Action(Do.NOTHING, f"no leader, and this node may not run: {v.why_not}")
    if v.better_peer:
        return Action(Do.NOTHING, f"no leader; yielding to {v.better_peer}, which is further ahead")
    if v.waiting:
        return Action(Do.NOTHING, f"no leader; {v.waiting}")
    return Action(Do.ACQUIRE, f"no leader: racing for the leader key at {v.position}")


def further_ahead(peer: dict[str, Any], mine: Position, my_node: str) -> bool:
    """Is an eligible peer's reported position ahead of `mine` (ties: the smaller node id)?"""
    if not peer.get("eligible") or peer.get("seq") is None or peer.get("epoch") is None:
        return False
    theirs = (int(peer["epoch"]), int(peer["seq"]), str(peer.get("node")) < my_node)
    return theirs > (mine.epoch, mine.seq, False)


class Said:
    """The sentence an HA loop said last (a follower's status shows it as `election`)."""

    def __init__(self) -> None:
        self.last: str | None = None

    def say(self, sentence: str) -> bool:
        """Note `sentence`; True if it differs from the last one (log it)."""
        new, self.last = sentence != self.last, sentence
        return new
