"""Talking to a sqlrepl node over HTTP (aiohttp): status, batches, snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from ..config import CONNECT_TIMEOUT, ClientTLS
from ..core.wire import FORK_HEADER
from ..errors import (
    AuthError,
    Diverged,
    PeerUnavailable,
    ProtocolError,
    Refused,
    SnapshotNeeded,
    StaleEpochError,
)

#: A snapshot transfer that receives nothing for this long is taken for dead (the leader
#: may wait up to 10 s to pin an image before it answers).
SNAPSHOT_STALL = 120.0
#: A snapshot's reads pause when this much is buffered: at aiohttp's 64 KiB the stream
#: stopped and started the socket thousands of times per GiB.
SNAPSHOT_BUFFER = 1 << 20


class Client:
    """One node's HTTP API. Use as `async with Client(url, token) as c:`."""

    def __init__(self, url: str, token: str | None = None, tls: ClientTLS | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        https = self.url.startswith("https://")
        tls_context = (tls or ClientTLS()).context() if https else None
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT),
            connector=aiohttp.TCPConnector(ssl=tls_context) if tls_context else None,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    def get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = 30.0,
        stall: float | None = None,
        buffer: int = 1 << 16,
    ) -> Any:
        """GET `path`; connection failures become PeerUnavailable, 401 AuthError. `stall`:
        the longest the peer may send nothing (the answer's start included) before the
        link is taken for dead; `buffer`: how much may arrive before reading pauses."""
        return self._request("GET", path, params, timeout, stall, buffer)

    async def post(
        self, path: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """POST an action; return its JSON answer. A refusal (409) raises Refused."""
        async with self._request("POST", path, params, timeout, None, 1 << 16) as response:
            if response.status == 409:
                raise Refused(await _error_message(response))
            await expect_ok(response)
            body: dict[str, Any] = await response.json(content_type=None)
            return body

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        timeout: float | None,
        stall: float | None,
        buffer: int,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        answered = False
        try:
            async with self._session.request(
                method,
                self.url + path,
                params={k: str(v) for k, v in (params or {}).items()},
                timeout=aiohttp.ClientTimeout(
                    total=timeout, connect=CONNECT_TIMEOUT, sock_read=stall
                ),
                read_bufsize=buffer,
            ) as response:
                if response.status == 401:
                    raise AuthError(f"{self.url} refused our token (401)")
                answered = True
                yield response
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if not answered:
                raise _unreachable(self.url, exc) from exc
            # It answered: never "unreachable", but where and how its answer stopped.
            if isinstance(exc, TimeoutError):
                why = f"sent nothing for {stall or timeout} s"
            else:
                why = f"broke off ({_reason(exc)})"
            raise PeerUnavailable(
                f"{self.url} {why} in the middle of its answer to {path}"
            ) from exc
        except aiohttp.InvalidURL as exc:
            raise PeerUnavailable(f"invalid URL {self.url}") from exc

    async def status(self, timeout: float = 5.0) -> dict[str, Any]:
        async with self.get("/status", timeout=timeout) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError as exc:
                raise ProtocolError(f"{self.url} is not a sqlrepl node (no JSON status)") from exc
            if response.status != 200 or not isinstance(body, dict) or "role" not in body:
                raise ProtocolError(f"{self.url} is not a sqlrepl node (HTTP {response.status})")
            return body


async def _error_message(response: aiohttp.ClientResponse) -> str:
    try:
        message = (await response.json(content_type=None)).get("error", "")
    except (ValueError, AttributeError, aiohttp.ClientError):
        message = ""
    return str(message or f"HTTP {response.status}")


async def expect_ok(response: aiohttp.ClientResponse) -> None:
    """Turn an error answer into the matching SqlreplError."""
    if response.status in (200, 204):
        return
    message = await _error_message(response)
    if response.status == 410 and response.headers.get(FORK_HEADER):
        raise Diverged(message)
    if response.status == 410:
        raise SnapshotNeeded(message)
    if response.status == 409:
        raise StaleEpochError(message)
    raise ProtocolError(f"{response.url.with_query(None)}: {message}")


def _unreachable(url: str, exc: BaseException) -> PeerUnavailable:
    """A request that got no answer, in one line that says why."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return PeerUnavailable(f"{url}: TLS failed: {_tls_reason(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        hint = " (an https node asked over http?)" if url.startswith("http:") else ""
        return PeerUnavailable(f"{url} closed the connection{hint}")
    return PeerUnavailable(f"{url} unreachable: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "os_error", None) or exc or type(exc).__name__
    return str(getattr(reason, "strerror", None) or reason)


def _tls_reason(exc: BaseException) -> str:
    """The certificate problem in one phrase (expired, unknown CA, wrong host…)."""
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
    return str(getattr(cause, "verify_message", None) or cause)
