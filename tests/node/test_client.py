"""How the node's HTTP client names a failure: a peer that answered is never "unreachable"."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sqlrepl.errors import PeerUnavailable
from sqlrepl.node.client import Client


def test_a_peer_that_stops_mid_answer_is_not_called_unreachable() -> None:
    """A leader that sent the start of a batch and then nothing: the follower's error says
    so (the loaded-cluster case of issue 24 said "unreachable" for minutes)."""

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"x" * 100)
        await asyncio.sleep(30)
        return response

    async def scenario() -> str:
        app = web.Application()
        app.router.add_get("/batch", stalls)
        server = TestServer(app)
        await server.start_server()
        try:
            async with Client(str(server.make_url(""))) as client:
                with pytest.raises(PeerUnavailable) as caught:
                    async with client.get("/batch", stall=0.3) as response:
                        await response.read()
            return str(caught.value)
        finally:
            await server.close()

    message = asyncio.run(scenario())
    assert "unreachable" not in message
    assert "sent nothing for 0.3 s in the middle of its answer to /batch" in message


def test_a_dead_port_is_unreachable() -> None:
    async def scenario() -> str:
        async with Client("http://127.0.0.1:9") as client:
            with pytest.raises(PeerUnavailable) as caught:
                async with client.get("/status", timeout=5):
                    pass
        return str(caught.value)

    assert "unreachable" in asyncio.run(scenario())
