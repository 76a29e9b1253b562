"""The durability rule of synchronous commits (quorum commit, Patroni's model). Pure.

The leader records a *sync set* in the coordinator: the `n` followers whose
acknowledgements count, and `k`, the fewest acknowledgements any commit since it was
recorded was acknowledged with. It is written when membership or `k` changes, before an
acknowledgement needs it, never per commit. The leader keeps one invariant: every
acknowledged commit is held by at least `k` members of the recorded set. So any
`n - k + 1` members include a holder of each, and a candidate may race for the leader
key only after hearing the positions of that many members (itself included, if it is
one) and being at least as far as each of them. When it cannot hear enough, nobody is
promoted: the cluster waits for the members that may hold acknowledged commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .positions import Position


@dataclass(frozen=True)
class SyncSet:
    #: The epoch of the leader that recorded it, and that leader's node id.
    epoch: int
    leader: str
    #: The fewest acknowledgements a commit counted since it was recorded (at least 1).
    k: int
    #: node -> URL of each member (others reach it there to ask its position).
    members: dict[str, str] = field(default_factory=dict)

    def dump(self) -> str:
        return json.dumps(
            {"epoch": self.epoch, "leader": self.leader, "k": self.k, "members": self.members},
            sort_keys=True,
        )

    @classmethod
    def load(cls, raw: str | bytes | Mapping[str, Any]) -> SyncSet:
        value = raw if isinstance(raw, Mapping) else json.loads(raw)
        members = {str(n): str(u) for n, u in dict(value.get("members") or {}).items()}
        return cls(int(value["epoch"]), str(value["leader"]), int(value["k"]), members)

    @property
    def quorum(self) -> int:
        """How many members a candidate must hear (itself included) before it runs."""
        return election_quorum(len(self.members), self.k)

    def describe(self) -> str:
        names = ", ".join(sorted(self.members)) or "none"
        return f"k={self.k} of {{{names}}}"


def election_quorum(n: int, k: int) -> int:
    """Members a candidate must hear: n - k + 1 (any that many overlap any k)."""
    return max(1, n - k + 1)


def may_drop(node: str, held: Mapping[str, int], k: int, acknowledged: int) -> bool:
    """May the leader drop `node` from the set? Only if `k` other members (by `held`:
    member -> the seq its file holds) hold everything acknowledged so far."""
    return sum(1 for m, seq in held.items() if m != node and seq >= acknowledged) >= k


def verdict(
    sync: SyncSet, me: str, mine: Position, heard: Mapping[str, Position | None], head: str
) -> str | None:
    """None if a candidate at `mine` may race for the leader key under the rule; else why
    not (the sentence its HA loop logs and its status shows). `heard`: member -> the
    position it answered with now (None: no answer); `head`: the newest position a
    leader published ("EPOCH:SEQ"), what acknowledged commits can reach at most."""
    positions = {n: p for n, p in heard.items() if n in sync.members and p is not None}
    if me in sync.members:
        positions[me] = mine
    for node, where in sorted(positions.items()):
        if (where.epoch, where.seq) > (mine.epoch, mine.seq):
            return (
                f"{node} of the sync set holds more ({where.epoch}:{where.seq}, this node "
                f"{mine.epoch}:{mine.seq}): it runs, this node does not"
            )
    if len(positions) >= sync.quorum:
        return None
    missing = sorted(set(sync.members) - set(positions))
    return (
        f"waiting for {', '.join(missing)}, which may hold acknowledged commits up to "
        f"{head} (heard {len(positions)} of the {sync.quorum} sync set members needed, "
        f"{sync.describe()})"
    )


def judge(
    sync: SyncSet,
    me: str,
    mine: Position,
    answers: Iterable[Mapping[str, Any]],
    head: Mapping[str, Any] | None,
) -> str | None:
    """`verdict` from what members answered to a status request (each with its "node",
    "epoch" and "seq") and the head a leader last published (None: none yet)."""
    heard: dict[str, Position | None] = {
        str(a["node"]): Position(int(a.get("epoch") or 0), int(a["seq"]))
        for a in answers
        if a.get("node") and a.get("seq") is not None
    }
    top = f"{head.get('epoch')}:{head.get('seq')}" if head else "the newest head"
    return verdict(sync, me, mine, heard, top)
