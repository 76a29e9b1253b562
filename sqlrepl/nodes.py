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
    return asyncio.run(_promote(url, force, token))


async def _promote(url: str, force: bool, token: str | None) -> dict[str, Any]:
    async with Client(url, token) as client:
        info = await client.status()
        if info.get("role") != "follower":
            raise Refused(f"promote refused: {url} is a {info.get('role')}, not a follower")
        params = {"force": 1} if force else {}
        return await client.post("/promote", params)


def switchover(target: str, force: bool, token: str | None) -> dict[str, Any]:
    return asyncio.run(_switchover(target, force, token))


async def _switchover(target: str, force: bool, token: str | None) -> dict[str, Any]:
    async with Client(target, token) as client:
        info = await client.status()
    if info.get("role") != "follower":
        raise Refused(f"switchover refused: {target} is a {info.get('role')}, not a follower")
    async with Client(str(info["leader"]), token) as client:
        params = {"to": target, **({"force": 1} if force else {})}
        return await client.post("/switchover", params, timeout=60)


def epochs(url: str, token: str | None) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        async with Client(url, token) as client:
            return list((await client.status()).get("history") or [])

    return asyncio.run(fetch())


__all__ = ["cluster_status", "epochs", "promote", "run_follower", "run_leader", "switchover"]
