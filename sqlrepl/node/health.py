"""Health endpoints for load balancers, answered without the token (they reveal only the
role): Patroni's `/primary` and `/replica?lag=`, LiteFS' `/health`.

    GET /health                      200: the daemon is alive and doing its job
    GET /leader                      200: the leader, with its write gate open
    GET /replica?lag=N&seconds=S     200: a follower within N changes and S seconds

Every other answer is 503, with a one-line JSON body saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from .http import error

PATHS = frozenset({"/health", "/leader", "/replica"})


@dataclass(frozen=True)
class Health:
    """What a node says of itself to a load balancer."""

    role: str
    #: None: healthy; else why not.
    problem: str | None
    #: A leader that takes writes now.
    writable: bool = False
    #: A follower's lag in changes and seconds (None: not known).
    lag_changes: int | None = None
    lag_seconds: float | None = None
    #: Why a leader takes no writes now (its write gate's own answer).
    why_not_writable: str | None = None
    #: What goes wrong now without making the node unhealthy (a follower's lasting
    #: replication failure, with its cause; a leader's problems): in the answer's body.
    notes: tuple[str, ...] = ()


def add_routes(app: web.Application, probe: Callable[[], Health]) -> None:
    async def health(request: web.Request) -> web.Response:
        h = probe()
        if h.problem:
            return error(503, h.problem)
        return web.json_response({"role": h.role, "healthy": True, "problems": list(h.notes)})

    async def leader(request: web.Request) -> web.Response:
        h = probe()
        if h.role != "leader" or not h.writable:
            why = h.problem or h.why_not_writable or "write gate closed"
            return error(503, f"not a writable leader ({h.role}: {why})")
        return web.json_response({"role": h.role, "writable": True})

    async def replica(request: web.Request) -> web.Response:
        h = probe()
        if h.role != "follower":
            return error(503, f"not a follower ({h.role})")
        if h.problem:
            return error(503, h.problem)
        try:
            max_changes = _bound(request, "lag", int)
            max_seconds = _bound(request, "seconds", float)
        except ValueError as exc:
            return error(400, str(exc))
        changes, seconds = h.lag_changes, h.lag_seconds
        if max_changes is not None and (changes is None or changes > max_changes):
            return error(503, f"lagging {changes} changes (bound {max_changes})")
        if max_seconds is not None and (seconds is None or seconds > max_seconds):
            return error(503, f"lagging {seconds} s (bound {max_seconds:g} s)")
        return web.json_response({"role": h.role, "lag": {"changes": changes, "seconds": seconds}})

    app.router.add_get("/health", health)
    app.router.add_get("/leader", leader)
    app.router.add_get("/replica", replica)


def _bound(request: web.Request, name: str, kind: type) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"parameter {name} must be a number") from None
    if value < 0:
        raise ValueError(f"parameter {name} must not be negative")
    return float(value)
