"""Starting daemons and asking nodes for their status: the library calls behind the CLI."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from .client import Client
from .config import check_exposure
from .errors import Refused, SqlreplError
from .follower import Follower, FollowerConfig
from .leader import Leader, LeaderConfig
from .web import stop_on_signals

log = logging.getLogger("sqlrepl")


def run_leader(config: LeaderConfig, follower: FollowerConfig | None = None) -> None:
    """Lead; if leadership passes on (switchover, deposed), keep running as a follower."""
    check_exposure(config.host, config.token)
    asyncio.run(_run_node("leader", config, follower))


def run_follower(config: FollowerConfig, leader: LeaderConfig | None = None) -> None:
    """Follow; if promoted, keep running as the leader."""
    check_exposure(config.host, config.token)
    if not config.db.parent.is_dir():
        raise SqlreplError(f"directory {config.db.parent} does not exist")
    asyncio.run(_run_node("follower", leader, config))


async def _run_node(
    role: str, leader: LeaderConfig | None, follower: FollowerConfig | None
) -> None:
    """One daemon, one file, one port: the role changes, the process stays."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    base = leader or follower
    assert base is not None
    etcd = base.etcd
    if etcd is not None:
        await asyncio.to_thread(etcd.check_config)
    while True:
        if role == "leader":
            assert leader is not None
            transition = await Leader(leader).run(stop)
        else:
            assert follower is not None
            transition = await Follower(follower).run(stop)
        if transition is None:
            return
        log.warning(
            "now %s%s: %s",
            transition.role,
            f" of {transition.leader}" if transition.leader else "",
            transition.reason,
        )
        if transition.role == "leader":
            leader = leader or LeaderConfig(base.db, base.host, base.port, base.token, etcd=etcd)
        else:
            follower = replace(
                follower
                or FollowerConfig(base.db, "", base.host, base.port, base.token, etcd=etcd),
                leader=str(transition.leader),
            )
        role = transition.role


def cluster_status(urls: list[str], token: str | None) -> list[dict[str, Any]]:
    """One entry per URL: `ok`, `url`, and the node's own status fields."""
    return asyncio.run(_statuses(urls, token))


async def _statuses(urls: list[str], token: str | None) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_one_status(u, token) for u in urls)))


async def _one_status(url: str, token: str | None) -> dict[str, Any]:
    async with Client(url, token) as client:
        try:
            body = await client.status()
        except SqlreplError as exc:
            return {
                "url": url,
                "ok": False,
                "role": None,
                "epoch": None,
                "seq": None,
                "lag": None,
                "error": str(exc),
            }
    lag = body.get("lag") if body.get("role") == "follower" else None
    return {**body, "url": url, "node_url": body.get("url"), "ok": True, "lag": lag}


def promote(url: str, force: bool, token: str | None) -> dict[str, Any]:
    """Ask the follower at `url` to take over (see Follower.promote)."""

    async def go() -> dict[str, Any]:
        await _follower_at(url, token, "promote")
        return await _post(url, "/promote", {"force": 1} if force else {}, token)

    return asyncio.run(go())


def switchover(target: str, force: bool, token: str | None) -> dict[str, Any]:
    """Ask the leader of the follower at `target` to hand over to it (Leader.switchover)."""

    async def go() -> dict[str, Any]:
        info = await _follower_at(target, token, "switchover")
        params = {"to": target, **({"force": 1} if force else {})}
        return await _post(str(info["leader"]), "/switchover", params, token)

    return asyncio.run(go())


async def _follower_at(url: str, token: str | None, action: str) -> dict[str, Any]:
    async with Client(url, token) as client:
        info = await client.status()
    if info.get("role") != "follower":
        raise Refused(f"{action} refused: {url} is a {info.get('role')}, not a follower")
    return info


async def _post(url: str, path: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
    async with Client(url, token) as client:
        return await client.post(path, params, timeout=60)


def epochs(url: str, token: str | None) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        async with Client(url, token) as client:
            return list((await client.status()).get("history") or [])

    return asyncio.run(fetch())


__all__ = ["cluster_status", "epochs", "promote", "run_follower", "run_leader", "switchover"]
