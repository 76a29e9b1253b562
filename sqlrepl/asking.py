"""Asking a node from an app (`api`): one kept-alive HTTP connection per thread and
node, the node's error answers as the matching SqlreplError. Standard library only: no
daemon code runs in the app."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any

from . import config
from .core.wire import FORK_HEADER
from .errors import (
    AuthError,
    ConfigError,
    NotAcknowledged,
    PeerUnavailable,
    Refused,
    SqlreplError,
    TokenForked,
)


def get(
    url: str,
    path: str,
    params: dict[str, str],
    timeout: float,
    auth: str | None,
    tls: config.ClientTLS | None = None,
) -> Any:
    """GET a node's endpoint over a kept-alive connection (one per thread and node); its
    error as the matching SqlreplError. `tls`: how an https node is checked (default:
    $SQLREPL_TLS_CA, else the system's CAs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not a node URL (http://HOST:PORT)")
    headers = {}
    secret = auth or config.load_token(None)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    target = f"{path}?{urllib.parse.urlencode(params)}"
    for attempt in (1, 2):  # a kept-alive connection the node closed meanwhile: once more
        conn = _connection(parts, timeout + config.CONNECT_TIMEOUT, tls)
        try:
            conn.request("GET", target, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
        except (http.client.HTTPException, OSError) as exc:
            _drop(parts)
            if attempt == 1 and isinstance(
                exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
            ):
                continue
            raise PeerUnavailable(f"{url} did not answer: {exc}") from None
        if answer.status == 200:
            return json.loads(body)
        raise _error(url, answer.status, answer.reason, answer.headers, body)
    raise AssertionError("unreachable")


_local = threading.local()


def _connection(
    parts: urllib.parse.SplitResult, timeout: float, tls: config.ClientTLS | None
) -> http.client.HTTPConnection:
    pool: dict[str, http.client.HTTPConnection] = _local.__dict__.setdefault("pool", {})
    http_conn = pool.get(parts.netloc)
    if http_conn is None:
        host = parts.hostname or ""
        if parts.scheme == "https":
            http_conn = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=(tls or config.ClientTLS()).context()
            )
        else:
            http_conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        pool[parts.netloc] = http_conn
    http_conn.timeout = timeout
    if http_conn.sock is not None:
        http_conn.sock.settimeout(timeout)
    return http_conn


def _drop(parts: urllib.parse.SplitResult) -> None:
    conn = _local.__dict__.get("pool", {}).pop(parts.netloc, None)
    if conn is not None:
        conn.close()


def _error(url: str, status: int, reason: str, headers: Any, body: bytes) -> SqlreplError:
    try:
        message = str(json.loads(body).get("error") or reason)
    except ValueError:
        message = reason
    if status == 401:
        return AuthError(f"{url}: {message}")
    if status == 504:
        return NotAcknowledged(message)
    if status == 409 and headers.get(FORK_HEADER):
        return TokenForked(message)
    if status == 400:
        return ConfigError(message)
    return Refused(f"{url}: {message}")
