"""Finding the cluster's current leader by asking the members a node knows.

Static coordination has no shared registry: each leader tells its followers the members
it knows (with every batch answer), each follower remembers them, and a node that lost
its leader, or starts on a file whose leader may have moved on, asks them. The newest
epoch wins; a node that follows someone else names its leader, which is asked too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ..config import ClientTLS
from ..errors import SqlreplError
from .client import Client

#: How long each member may take to answer.
ASK_TIMEOUT = 1.0


async def survey(
    urls: Iterable[str], token: str | None, tls: ClientTLS | None = None
) -> list[dict[str, Any]]:
    """The status of every member at `urls` that answers (one hop further: the leaders
    that answering followers name)."""
    asked: set[str] = set()
    found: list[dict[str, Any]] = []
    todo = {u.rstrip("/") for u in urls if u}
    for _hop in range(2):
        todo -= asked
        asked |= todo
        answers = await asyncio.gather(*(ask(u, token, tls=tls) for u in sorted(todo)))
        found += [a for a in answers if a is not None]
        todo = {str(a["leader"]) for a in found if a.get("role") == "follower" and a.get("leader")}
    return found


async def ask(
    url: str, token: str | None, timeout: float = ASK_TIMEOUT, tls: ClientTLS | None = None
) -> dict[str, Any] | None:
    """The status of the node at `url` (with the URL asked), or None if it does not answer
    in time."""
    try:
        async with Client(url, token, tls) as client:
            return {**await client.status(timeout=timeout), "asked": url}
    except SqlreplError:
        return None


def newest_leader(
    answers: list[dict[str, Any]], cluster: str | None, above: int, any_cluster: bool = False
) -> str | None:
    """The URL of the leader of `cluster` (or, with `any_cluster`, of whichever cluster
    answers: a node with no file yet) on the newest epoch above `above`, if any answered
    (a follower that lost its leader asks for its own epoch or newer: there is one leader per
    epoch)."""
    leaders = [
        a
        for a in answers
        if a.get("role") == "leader"
        and (any_cluster or a.get("cluster") == cluster)
        and a.get("leading", True)
        and int(a.get("epoch") or 0) > above
    ]
    if not leaders:
        return None
    return str(max(leaders, key=lambda a: int(a["epoch"]))["url"])


def highest_epoch(answers: list[dict[str, Any]]) -> int:
    """The newest epoch any answering member holds or has seen in its history."""
    epochs = [int(a.get("epoch") or 0) for a in answers]
    epochs += [int(h.get("epoch") or 0) for a in answers for h in a.get("history") or []]
    return max(epochs, default=0)
