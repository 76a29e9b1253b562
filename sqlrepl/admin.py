"""The operator's calls: status of every node, promote, switchover, history.

Thin clients over the nodes' HTTP API, behind the CLI.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from .config import ClientTLS
from .core.status import NodeStatus
from .errors import Refused, SqlreplError
from .node.client import Client

#: How long an action (promote, switchover) may take before the CLI gives up on it.
ACTION_TIMEOUT = 60.0


def cluster_status(
    urls: list[str], token: str | None, tls: ClientTLS | None = None
) -> list[NodeStatus]:
    """One entry per URL: `ok`, `url`, and the node's own status fields."""
    return asyncio.run(_statuses(urls, token, tls))


async def _statuses(urls: list[str], token: str | None, tls: ClientTLS | None) -> list[NodeStatus]:
    return list(await asyncio.gather(*(_one_status(u, token, tls) for u in urls)))


async def _one_status(url: str, token: str | None, tls: ClientTLS | None) -> NodeStatus:
    async with Client(url, token, tls) as client:
        try:
            body = await client.status()
        except SqlreplError as exc:
            return NodeStatus(
                url=url, ok=False, role=None, epoch=None, seq=None, lag=None, error=str(exc)
            )
    lag = body.get("lag") if body.get("role") == "follower" else None
    # What the node said, as the one status type (it is a sqlrepl node: client.status
    # checked that it answers with a role).
    return cast(
        NodeStatus, {**body, "url": url, "node_url": body.get("url"), "ok": True, "lag": lag}
    )


def unhealthy(nodes: list[NodeStatus], max_lag_seconds: float) -> list[str]:
    """Why each node is unhealthy: unreachable, a follower not streaming, failing, or too
    far behind (empty: all healthy)."""
    out = []
    for n in nodes:
        if not n["ok"]:
            out.append(f"{n['url']}: unreachable: {n['error']}")
            continue
        if n.get("role") != "follower":
            if n.get("error"):
                out.append(f"{n['url']}: {n['error']}")
            continue
        lag = n.get("lag")
        seconds = float((lag["seconds"] if lag else 0) or 0)
        if n.get("state") != "streaming":
            out.append(f"{n['url']}: {n.get('state')}: {n.get('error') or 'not streaming'}")
        elif n.get("error"):
            out.append(f"{n['url']}: {n['error']}")
        elif seconds > max_lag_seconds:
            out.append(f"{n['url']}: {seconds:g} s behind its leader (max {max_lag_seconds:g})")
    return out


def promote(
    url: str, force: bool, token: str | None, tls: ClientTLS | None = None
) -> dict[str, Any]:
    """Ask the follower at `url` to take over."""

    async def go() -> dict[str, Any]:
        await _follower_at(url, token, tls, "promote")
        return await _post(url, "/promote", {"force": 1} if force else {}, token, tls)

    return asyncio.run(go())


def switchover(
    target: str, force: bool, token: str | None, tls: ClientTLS | None = None
) -> dict[str, Any]:
    """Ask the leader of the follower at `target` to hand over to it."""

    async def go() -> dict[str, Any]:
        info = await _follower_at(target, token, tls, "switchover")
        params = {"to": target, **({"force": 1} if force else {})}
        return await _post(str(info["leader"]), "/switchover", params, token, tls)

    return asyncio.run(go())


async def _follower_at(
    url: str, token: str | None, tls: ClientTLS | None, action: str
) -> dict[str, Any]:
    async with Client(url, token, tls) as client:
        info = await client.status()
    if info.get("role") != "follower":
        raise Refused(f"{action} refused: {url} is a {info.get('role')}, not a follower")
    return info


async def _post(
    url: str, path: str, params: dict[str, Any], token: str | None, tls: ClientTLS | None
) -> dict[str, Any]:
    async with Client(url, token, tls) as client:
        return await client.post(path, params, timeout=ACTION_TIMEOUT)


def cluster_settings(
    url: str, pairs: dict[str, str], token: str | None, tls: ClientTLS | None = None
) -> dict[str, Any]:
    """The cluster's settings, changed first by `pairs` if any, asked of the leader of
    the node at `url` (or of `url` itself if it leads)."""

    async def go() -> dict[str, Any]:
        async with Client(url, token, tls) as client:
            info = await client.status()
        leader = url if info.get("role") == "leader" else str(info.get("leader") or url)
        if pairs:
            return await _post(leader, "/settings", dict(pairs), token, tls)
        async with Client(leader, token, tls) as client:
            found = (await client.status()).get("settings")
        if not isinstance(found, dict):
            raise Refused(f"{leader} does not lead now: ask again in a moment")
        return found

    return asyncio.run(go())


def epochs(url: str, token: str | None, tls: ClientTLS | None = None) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        async with Client(url, token, tls) as client:
            return list((await client.status()).get("history") or [])

    return asyncio.run(fetch())


__all__ = ["cluster_settings", "cluster_status", "epochs", "promote", "switchover", "unhealthy"]
