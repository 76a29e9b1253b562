"""Running a node: one daemon, one file, one port; the role changes, the process stays.

Start-up checks everything before it touches the file: the file's lock, the coordinator's
settings and cluster, the listening port, what the file is. A refusal leaves the file as
it was (bytes, journal mode, triggers, gate).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import advertised_url, check_exposure
from ..coord import Coordinator, from_url
from ..core import capture, roles, tempfiles
from ..errors import SqlreplError
from . import discovery
from .follower import Follower, FollowerConfig
from .http import listen, stop_on_signals
from .leader import Leader, LeaderConfig
from .lock import exclusive
from .members import Members

log = logging.getLogger("sqlrepl")


def run_leader(config: LeaderConfig) -> None:
    """Lead; if leadership passes on (switchover, deposed), keep running as a follower.

    A file that already follows another leader (it handed over, or was deposed) is not
    made a leader again: the node runs as that leader's follower.
    """
    check_exposure(config.host, config.token)
    advertised_url(config.host, config.port, config.advertise)
    coord = from_url(config.coordinator, config.ttl)
    with exclusive(config.db):
        asyncio.run(_run_node(coord, config, None))


def run_follower(config: FollowerConfig) -> None:
    """Follow; if promoted, keep running as the leader."""
    check_exposure(config.host, config.token)
    if not config.db.parent.is_dir():
        raise SqlreplError(f"directory {config.db.parent} does not exist")
    advertised_url(config.host, config.port, config.advertise)
    coord = from_url(config.coordinator, config.ttl)
    with exclusive(config.db):
        asyncio.run(_run_node(coord, None, config))


async def _run_node(
    coord: Coordinator, leader: LeaderConfig | None, follower: FollowerConfig | None
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    base = leader or follower
    assert base is not None
    listener = listen(base.host, base.port)
    for stale in tempfiles.remove_stale(base.db.parent, base.db.name):
        log.warning("removed %s, left behind by a process that is gone", stale)
    try:
        role, leader, follower = await _first_role(coord, leader, follower)
        while not stop.is_set():
            if role == "leader":
                transition = await Leader(leader, coord, listener).run(stop)
            else:
                transition = await Follower(follower, coord, listener).run(stop)
            if transition is None:
                return
            log.warning(
                "now %s%s: %s",
                transition.role,
                f" of {transition.leader}" if transition.leader else "",
                transition.reason,
            )
            if transition.leader:
                follower.leader = str(transition.leader)
            role = transition.role
    finally:
        listener.close()


async def _first_role(
    coord: Coordinator, leader: LeaderConfig | None, follower: FollowerConfig | None
) -> tuple[str, LeaderConfig, FollowerConfig]:
    """The role this node starts in, decided from the file before anything touches it."""
    base = leader or follower
    assert base is not None
    meta = await asyncio.to_thread(roles.peek, base.db)
    fresh_leader = leader is not None and not meta
    await asyncio.to_thread(coord.check_config, meta.get("cluster"), fresh_leader)
    leader, follower = _both_configs(leader, follower)
    if base is leader and meta.get("role") == "follower":
        follower.leader = str(meta.get("leader"))
        log.warning("%s follows %s: running as its follower", base.db, follower.leader)
        return "follower", leader, follower
    if base is leader or meta.get("role") == "leader":
        if base is leader:
            capture.refuse_to_lead(str(base.db), meta)
        given = [] if base is leader else [follower.leader]
        newer, answers = await _newer_leader(leader, meta, given)
        if newer:
            follower.leader = newer
            log.warning("%s leads a newer epoch: rejoining as its follower", newer)
            return "follower", leader, follower
        if base is leader or _follows_me(answers, follower.leader, leader):
            if base is follower:
                log.warning(
                    "%s follows this node, and no member leads a newer epoch than %s's: "
                    "leading again",
                    follower.leader,
                    base.db,
                )
            return "leader", leader, follower
    return "follower", leader, follower


def _follows_me(answers: list[dict[str, Any]], url: str, config: LeaderConfig) -> bool:
    """Does the node at `url` answer that it follows this one? (A leader file restarted
    as a follower of a node that follows it: nobody else would ever lead.)"""
    me = advertised_url(config.host, config.port, config.advertise)
    return any(
        a.get("asked") == url.rstrip("/") and a.get("role") == "follower" and a.get("leader") == me
        for a in answers
    )


async def _newer_leader(
    config: LeaderConfig, meta: dict[str, Any], also: list[str]
) -> tuple[str | None, list[dict[str, Any]]]:
    """A leader file restarted asks the members it remembers (and `also`) whether another
    node leads a newer epoch of its cluster meanwhile (it was deposed while down); returns
    that node's URL (None: none) and every answer."""
    if not meta:
        return None, []
    me = advertised_url(config.host, config.port, config.advertise)
    urls = set(await asyncio.to_thread(roles.peek_members, config.db)) | set(also)
    urls |= Members(config.db, me).others()
    urls.discard(me)
    answers = await discovery.survey(urls, config.token)
    epoch = int(meta.get("epoch") or 0)
    return discovery.newest_leader(answers, meta.get("cluster"), epoch), answers


def _both_configs(
    leader: LeaderConfig | None, follower: FollowerConfig | None
) -> tuple[LeaderConfig, FollowerConfig]:
    """The settings of both roles for the same file, port and coordinator."""
    base = leader or follower
    assert base is not None
    db, host, port, token = base.db, base.host, base.port, base.token
    coord, ttl, advertise = base.coordinator, base.ttl, base.advertise
    leader = leader or LeaderConfig(
        db, host, port, token, coordinator=coord, ttl=ttl, advertise=advertise
    )
    follower = follower or FollowerConfig(
        db, "", host, port, token, coordinator=coord, ttl=ttl, advertise=advertise
    )
    return leader, follower


__all__ = ["run_follower", "run_leader"]
