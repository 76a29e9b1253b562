"""What the leader and follower HTTP servers share: auth, errors, parameters, running."""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import SqlreplError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def auth_middleware(token: str | None) -> Any:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error(401, "missing or wrong token")
        return await handler(request)

    return check


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise _bad_request(f"missing parameter {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_request(f"parameter {name} must be an integer") from None


def json_param(request: web.Request, name: str) -> dict[str, str]:
    """A JSON object of strings passed as one query parameter (absent: empty)."""
    raw = request.query.get(name)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise _bad_request(f"parameter {name} must be JSON") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad_request(f"parameter {name} must be a JSON object of strings")
    return value


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (once per process: roles come and go, the node stays)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def forward_event(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set `target` once `source` is set (a node's stop ends its current role)."""
    await source.wait()
    target.set()


async def run_server(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve `app` until `stop` is set."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SqlreplError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
