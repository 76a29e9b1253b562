"""What the leader and follower HTTP servers share: auth, errors, parameters, running."""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..core.requests import query_int
from ..errors import ConfigError, ProtocolError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Seconds a role's HTTP server waits for requests in flight when the role ends.
SHUTDOWN_TIMEOUT = 0.25


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def auth_middleware(token: str | None, open_paths: frozenset[str] = frozenset()) -> Any:
    """Refuse requests without the token, except to `open_paths` (health checks)."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path not in open_paths:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error(401, "missing or wrong token")
        return await handler(request)

    return check


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def int_param(request: web.Request, name: str, default: int | None = None) -> int:
    """`requests.query_int`, answering 400 with its message when malformed."""
    try:
        return query_int(request.query, name, default)
    except ProtocolError as exc:
        raise _bad_request(str(exc)) from None


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (once per process: roles come and go, the node stays)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def forward_event(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set `target` once `source` is set (a node's stop ends its current role)."""
    await source.wait()
    target.set()


def listen(host: str, port: int) -> socket.socket:
    """Bind the node's listening socket, once per process: before the file is touched (a
    port in use changes nothing), and kept through role changes (no gap in between)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


async def run_server(
    app: web.Application,
    listener: socket.socket,
    stop: asyncio.Event,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Serve `app` on `listener` until `stop` is set (the listener itself stays open);
    over https with `tls`."""
    # A role change waits this long for requests in flight: every one of them is safe to
    # cut (a batch is applied whole or not at all, downloads are retried), while a longer
    # wait left the node answering in its old role (a restarted node could then not see
    # that this one leads, after a promotion).
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    try:
        await web.SockSite(runner, listener.dup(), ssl_context=tls).start()
        await stop.wait()
    finally:
        await runner.cleanup()
