"""Running a node: one daemon, one file, one port; the role changes, the process stays.

Start-up checks everything before it touches the file: the file's lock, the coordinator's
settings and cluster, the listening port, what the file is. A refusal leaves the file as
it was (bytes, journal mode, triggers, gate).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from ..config import check_exposure, own_url
from ..coord import Coordinator, from_url
from ..core import roles, tempfiles
from ..core.positions import refuse_to_lead
from ..errors import SqlreplError
from . import discovery
from .configs import FollowerConfig, LeaderConfig
from .follower.role import Follower
from .http import listen, stop_on_signals
from .leader.role import Leader
from .lock import exclusive
from .members import Members

log = logging.getLogger("sqlrepl")


def run_leader(config: LeaderConfig) -> None:
    """Lead; if leadership passes on (switchover, deposed), keep running as a follower.

    A file that already follows another leader (it handed over, or was deposed) is not
    made a leader again: the node runs as that leader's follower.
    """
    check_exposure(config.host, config.token)
    own_url(config)
    coord = from_url(config.coordinator, config.ttl)
    with exclusive(config.db):
        asyncio.run(_run_node(coord, config, None))


def run_follower(config: FollowerConfig) -> None:
    """Follow; if promoted, keep running as the leader."""
    check_exposure(config.host, config.token)
    if not config.db.parent.is_dir():
        raise SqlreplError(f"directory {config.db.parent} does not exist")
    own_url(config)
    coord = from_url(config.coordinator, config.ttl)
    with exclusive(config.db):
        asyncio.run(_run_node(coord, None, config))


def run_node(leader: LeaderConfig, follower: FollowerConfig, members: list[str]) -> None:
    """`sqlrepl node`: the role from the file and the cluster. A leader file leads (or
    follows a newer leader it finds), a follower file follows, a plain SQLite file founds
    a cluster unless a member already leads one, and a missing file is bootstrapped from
    whichever member (or etcd) says it leads, waiting until one does."""
    check_exposure(leader.host, leader.token)
    if not leader.db.parent.is_dir():
        raise SqlreplError(f"directory {leader.db.parent} does not exist")
    me = own_url(leader)
    coord = from_url(leader.coordinator, leader.ttl)
    with exclusive(leader.db):
        Members(leader.db, me).add(members)
        asyncio.run(_start_node(coord, leader, follower, [m for m in members if m != me]))


async def _start_node(
    coord: Coordinator, leader: LeaderConfig, follower: FollowerConfig, members: list[str]
) -> None:
    meta = await asyncio.to_thread(roles.peek, leader.db)
    exists = leader.db.exists() and leader.db.stat().st_size > 0
    if meta.get("role") == "follower":
        follower = replace(follower, leader=str(meta.get("leader") or ""))
        return await _run_node(coord, None, follower, leader)
    if meta.get("role") == "leader":
        return await _run_node(coord, leader, None, follower)
    found = await _current_leader(coord, members, leader, wait=not exists)
    if exists and found is None:
        return await _run_node(coord, leader, None, follower)  # a plain file: found a cluster
    if exists:
        raise SqlreplError(
            f"{leader.db} is a plain SQLite file, but {found} leads a cluster already: move "
            "the file away to join as a follower, or run `sqlrepl leader` to found another"
        )
    assert found is not None
    return await _run_node(coord, None, replace(follower, leader=found), leader)


async def _current_leader(
    coord: Coordinator, members: list[str], config: LeaderConfig, wait: bool
) -> str | None:
    """The URL of the node that leads now: from the coordinator, else the members."""
    delay = 0.5
    while True:
        holder = await asyncio.to_thread(coord.leader) if coord.automatic else None
        if holder and holder.get("url"):
            return str(holder["url"])
        answers = await discovery.survey(members, config.token, config.client_tls)
        found = discovery.newest_leader(answers, None, 0, any_cluster=True)
        if found or not wait:
            return found
        log.warning("no member leads yet (asked %s); asking again", ", ".join(members) or "none")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _run_node(
    coord: Coordinator,
    leader: LeaderConfig | None,
    follower: FollowerConfig | None,
    other: LeaderConfig | FollowerConfig | None = None,
) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    base = leader or follower
    assert base is not None
    listener = listen(base.host, base.port)
    for stale in tempfiles.remove_stale(base.db.parent, base.db.name):
        log.warning("removed %s, left behind by a process that is gone", stale)
    try:
        role, leader, follower = await _first_role(coord, leader, follower, other)
        while not stop.is_set():
            if role == "leader":
                transition = await Leader(leader, coord).run(stop, listener)
            else:
                transition = await Follower(follower, coord).run(stop, listener)
            if transition is None:
                return
            log.warning(
                "now %s%s: %s",
                transition.role,
                f" of {transition.leader}" if transition.leader else "",
                transition.reason,
            )
            if transition.leader:
                follower = replace(follower, leader=str(transition.leader))
            role = transition.role
    finally:
        listener.close()


async def _first_role(
    coord: Coordinator,
    leader: LeaderConfig | None,
    follower: FollowerConfig | None,
    other: LeaderConfig | FollowerConfig | None = None,
) -> tuple[str, LeaderConfig, FollowerConfig]:
    """The role this node starts in, decided from the file before anything touches it."""
    base = leader or follower
    assert base is not None
    meta = await asyncio.to_thread(roles.peek, base.db)
    fresh_leader = leader is not None and not meta
    await asyncio.to_thread(coord.check_config, meta.get("cluster"), fresh_leader)
    if isinstance(other, LeaderConfig) and leader is None:
        leader = other
    if isinstance(other, FollowerConfig) and follower is None:
        follower = other
    leader, follower = _both_configs(leader, follower)
    if base is leader and meta.get("role") == "follower":
        follower = replace(follower, leader=str(meta.get("leader")))
        log.warning("%s follows %s: running as its follower", base.db, follower.leader)
        return "follower", leader, follower
    if base is leader or meta.get("role") == "leader":
        if base is leader:
            refuse_to_lead(str(base.db), meta)
        given = [] if base is leader else [follower.leader]
        newer, answers = await _newer_leader(leader, meta, given)
        if newer:
            follower = replace(follower, leader=newer)
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
    me = own_url(config)
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
    me = own_url(config)
    urls = set(await asyncio.to_thread(roles.peek_members, config.db)) | set(also)
    urls |= Members(config.db, me).others()
    urls.discard(me)
    answers = await discovery.survey(urls, config.token, config.client_tls)
    epoch = int(meta.get("epoch") or 0)
    return discovery.newest_leader(answers, meta.get("cluster"), epoch), answers


def _both_configs(
    leader: LeaderConfig | None, follower: FollowerConfig | None
) -> tuple[LeaderConfig, FollowerConfig]:
    """The settings of both roles for the same file, port and coordinator."""
    base = leader or follower
    assert base is not None
    leader = leader or LeaderConfig(**base.shared())
    follower = follower or FollowerConfig(leader="", **base.shared())
    return leader, follower


__all__ = ["run_follower", "run_leader", "run_node"]
