"""Running a node: one daemon, one file, one port; the role changes, the process stays."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from ..config import check_exposure
from ..coord import Coordinator, from_url
from ..errors import SqlreplError
from .follower import Follower, FollowerConfig
from .http import stop_on_signals
from .leader import Leader, LeaderConfig

log = logging.getLogger("sqlrepl")


def run_leader(config: LeaderConfig) -> None:
    """Lead; if leadership passes on (switchover, deposed), keep running as a follower."""
    check_exposure(config.host, config.token)
    coord = from_url(config.coordinator, config.ttl)
    asyncio.run(_run_node(coord, config, None))


def run_follower(config: FollowerConfig) -> None:
    """Follow; if promoted, keep running as the leader."""
    check_exposure(config.host, config.token)
    if not config.db.parent.is_dir():
        raise SqlreplError(f"directory {config.db.parent} does not exist")
    coord = from_url(config.coordinator, config.ttl)
    asyncio.run(_run_node(coord, None, config))


async def _run_node(
    coord: Coordinator, leader: LeaderConfig | None, follower: FollowerConfig | None
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await asyncio.to_thread(coord.check_config)
    role = "leader" if leader is not None else "follower"
    while True:
        if leader is not None and role == "leader":
            transition = await Leader(leader, coord).run(stop)
        else:
            assert follower is not None
            transition = await Follower(follower, coord).run(stop)
        if transition is None:
            return
        log.warning(
            "now %s%s: %s",
            transition.role,
            f" of {transition.leader}" if transition.leader else "",
            transition.reason,
        )
        leader, follower = _next_configs(leader, follower, str(transition.leader or ""))
        role = transition.role


def _next_configs(
    leader: LeaderConfig | None, follower: FollowerConfig | None, new_leader: str
) -> tuple[LeaderConfig, FollowerConfig]:
    """The settings of both roles for the same file, port and coordinator."""
    base = leader or follower
    assert base is not None
    db, host, port, token = base.db, base.host, base.port, base.token
    coord, ttl = base.coordinator, base.ttl
    leader = leader or LeaderConfig(db, host, port, token, coordinator=coord, ttl=ttl)
    follower = follower or FollowerConfig(db, "", host, port, token, coordinator=coord, ttl=ttl)
    if new_leader:
        follower = replace(follower, leader=new_leader)
    return leader, follower


__all__ = ["run_follower", "run_leader"]
