"""Synchronous replication on the leader: acknowledgements, `GET /wait`, and the
`--min-sync-replicas` write gate.

A follower's pull after seq S says that S is committed in its file (it applies a batch
and its position in one transaction, then pulls again): that is its acknowledgement.
`wait` returns once k followers acknowledged a token, or fails naming how many did. With
`--min-sync-replicas N`, the gate stays closed while fewer than N followers are connected
and within `--max-replica-lag` seconds of the head (Redis' min-replicas-to-write), and
reopens by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import Any, Protocol

from aiohttp import web

from ...core import tokens
from ...core.positions import Position
from ...core.wire import FORK_HEADER
from ...errors import ConfigError, TokenForked
from ..configs import LeaderConfig
from ..http import error
from .gate import Leadership, WriteGate
from .head import LogHead
from .retention import Retention

log = logging.getLogger("sqlrepl.leader")
#: Longest one `GET /wait` may be asked to wait.
MAX_WAIT = 300.0
DEFAULT_WAIT = 10.0
#: How often the min-sync-replicas check runs besides on every acknowledgement.
SYNC_CHECK_INTERVAL = 0.25
#: The hold a leader with --min-sync-replicas starts with.
WAITING = "waiting for"


class Syncing(Protocol):
    """What synchronous replication asks of the leader."""

    @property
    def config(self) -> LeaderConfig: ...

    head: LogHead
    followers: Retention
    leadership: Leadership
    gate: WriteGate


def initial_hold(min_sync_replicas: int) -> str | None:
    if min_sync_replicas <= 0:
        return None
    return f"{WAITING} {min_sync_replicas} fresh followers (min_sync_replicas)"


def needed_acks(raw: str, known: int) -> int:
    """`acks` as asked: a number, or `majority`: a majority of the cluster's voting nodes,
    the leader counted (it holds the commit), so half the `known` voters rounded up, at
    least 1 (voters: the replicas that may lead; an archive never votes)."""
    if raw == "majority":
        return max(1, (known + 1) // 2)
    if not raw.isdigit():
        raise ConfigError(f"acks must be a number or 'majority', not {raw!r}")
    return int(raw)


def wait_params(request: web.Request) -> tuple[Position, str, float]:
    """token, acks and timeout of a `GET /wait` (ConfigError if malformed)."""
    token = tokens.parse(request.query.get("token", ""))
    try:
        timeout = float(request.query.get("timeout", DEFAULT_WAIT))
    except ValueError:
        raise ConfigError("timeout must be a number of seconds") from None
    if not 0 <= timeout <= MAX_WAIT:
        raise ConfigError(f"timeout must be between 0 and {MAX_WAIT:g} seconds")
    return token, request.query.get("acks", "1"), timeout


async def wait(leader: Syncing, request: web.Request) -> web.Response:
    """`GET /wait?token=E:S&acks=K|majority&timeout=SECONDS` on the leader."""
    try:
        token, acks, timeout = wait_params(request)
        known = leader.followers.voters()
        needed = needed_acks(acks, len(known))
        mine = leader.head.epoch
        if token.epoch > mine:
            return error(
                409,
                f"token {tokens.format_token(token)} is from epoch {token.epoch}, newer "
                f"than this leader's {mine}: ask the leader of that epoch",
            )
        tokens.holds(leader.head.history, Position(mine, token.seq), token)  # a fork raises
    except ConfigError as exc:
        return error(400, str(exc))
    except TokenForked as exc:
        return error(409, str(exc), {FORK_HEADER: "1"})
    if not leader.leadership.leading:
        return error(503, "this node is not the leader now")
    if token.seq > leader.head.seq:
        leader.followers.acks.hurry.set()  # its commit may wait in the pause between two looks
    keeper = leader.followers.sync
    keeper.want(needed)
    counted = functools.partial(keeper.counted, needed)
    have = await leader.followers.acks.wait_for(token.seq, counted, needed, timeout)
    if len(have) >= needed:
        keeper.acknowledge(token.seq)  # before anything else runs: no member leaves unseen
    known = leader.followers.voters()
    body: dict[str, Any] = {
        "token": tokens.format_token(token),
        "acks": len(have),
        "needed": needed,
        "followers": len(known),
        "nodes": sorted(have),
    }
    if len(have) >= needed:
        return web.json_response(body)
    body["error"] = (
        f"timed out after {timeout:g}s: {len(have)} of the {needed} acknowledgements "
        f"asked for token {body['token']} ({len(known)} followers known, "
        f"{len(keeper.counted(needed))} counted)"
    ) + (f": {keeper.problem}" if keeper.problem else "")
    return web.json_response(body, status=504)


async def enforce_min_replicas(leader: Syncing) -> None:
    """Keep the gate closed while fewer followers than the cluster's `min_sync_replicas`
    are fresh (read anew each time: the setting may change at run time)."""
    gate = leader.gate
    while True:
        settings = leader.followers.sync.settings
        want, max_lag = settings.min_sync_replicas, settings.max_replica_lag
        moved = leader.followers.acks.moved
        fresh = len(leader.followers.acks.fresh(leader.head.seq, max_lag))
        if fresh < want:
            reason = gate.hold
            if reason is None or reason.startswith(WAITING):
                reason = (
                    f"only {fresh} of the {want} followers min_sync_replicas asks for are "
                    f"connected within {max_lag:g}s (max_replica_lag): writes refused"
                )
            await gate.hold_shut(reason)
        elif gate.hold is not None:
            await gate.release(f"{fresh} followers are fresh (min_sync_replicas {want})")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SYNC_CHECK_INTERVAL):
                await moved.wait()
