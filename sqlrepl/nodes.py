"""Starting daemons and asking nodes for their status: the library calls behind the CLI."""

from __future__ import annotations

import asyncio
from typing import Any

from .client import Client
from .config import check_exposure
from .errors import SqlreplError
from .follower import Follower, FollowerConfig
from .leader import Leader, LeaderConfig


def run_leader(config: LeaderConfig) -> None:
    check_exposure(config.host, config.token)
    asyncio.run(_run_leader(config))


async def _run_leader(config: LeaderConfig) -> None:
    await Leader(config).run(asyncio.Event())


def run_follower(config: FollowerConfig) -> None:
    check_exposure(config.host, config.token)
    if not config.db.parent.is_dir():
        raise SqlreplError(f"directory {config.db.parent} does not exist")
    asyncio.run(_run_follower(config))


async def _run_follower(config: FollowerConfig) -> None:
    await Follower(config).run(asyncio.Event())


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


__all__ = ["cluster_status", "run_follower", "run_leader"]
