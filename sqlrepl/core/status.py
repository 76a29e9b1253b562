"""What a node says of itself (`GET /status`), as one type: built by the leader's and the
follower's endpoints, read by the operator's calls (`admin`) and printed by `render`.
`status --json` adds `ok` (did it answer) and `node_url` (the URL it gives itself).
docs/operations.md describes each key."""

from __future__ import annotations

from typing import Any, TypedDict


class Lag(TypedDict):
    changes: int
    seconds: float | None


class FollowerSeen(TypedDict):
    """A follower as its leader sees it."""

    node: str
    url: str
    seq: int
    lag: int
    last_seen: float
    voter: bool
    #: In the sync set: its acknowledgements count, and elections wait to hear it.
    sync: bool


class Problem(TypedDict, total=False):
    """A replication failure that lasts (and, once over, when it ended)."""

    cause: str | None
    tries: int
    since: float
    ended: float


class NodeStatus(TypedDict, total=False):
    # Every node.
    role: str | None
    url: str
    db: str
    node: str
    cluster: str | None
    epoch: int | None
    seq: int | None
    error: str | None
    gate: str
    history: list[dict[str, Any]]
    # A leader.
    followers: list[FollowerSeen]
    problems: list[str]
    lease_valid: bool
    writable: bool
    leading: bool
    coordinator: str
    sync_set: dict[str, Any] | None
    settings: dict[str, Any]
    # A follower.
    leader: str
    leader_seq: int | None
    lag: Lag | None
    last_contact: float | None
    state: str
    snapshot: dict[str, Any] | None
    problem: Problem | None
    last_problem: Problem | None
    candidate: bool
    eligible: bool
    why_not: str | None
    rollback: str | None
    election: str | None
    # Added by `status --json` (admin).
    ok: bool
    node_url: str | None
