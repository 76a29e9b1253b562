"""A TCP proxy for fault injection: put one between two processes, then cut, blackhole,
slow or heal the link while they run.

    with Proxy(target_port) as p:      # listens on p.port, forwards to target_port
        p.cut()        # close every connection and refuse new ones (RST-like: fast errors)
        p.blackhole()  # keep connections but forward nothing (a dead link: timeouts)
        p.delay(0.2)   # every chunk arrives 0.2 s late, each way (a slow link)
        p.delay(0.2, loss=0.05)  # and 5 % of chunks are "lost": they (and what follows
                                 # them) wait one more retransmission timeout, as over TCP
        p.heal()       # forward everything again, at once
        p.throttle(4e6)  # at most 4 MB/s each way (a thin link; None: no limit)

It runs its own asyncio loop in a thread; every connection is closed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from typing import Any

from .daemons import free_port

OK, CUT, BLACKHOLE = "ok", "cut", "blackhole"
#: Linux's shortest TCP retransmission timeout.
RTO_MIN = 0.2


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self.mode = OK
        self.latency = 0.0
        self.loss = 0.0
        self.rate: float | None = None
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Proxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _set(self, mode: str, latency: float | None = None, loss: float = 0.0) -> None:
        async def change() -> None:
            self.mode = mode
            if latency is not None:
                self.latency, self.loss = latency, loss
            if mode == CUT:
                for w in list(self._writers):
                    w.transport.abort()
            assert self._changed is not None
            self._changed.set()
            self._changed.clear()

        self._call(change())

    def cut(self) -> None:
        self._set(CUT)

    def blackhole(self) -> None:
        self._set(BLACKHOLE)

    def delay(self, seconds: float, loss: float = 0.0) -> None:
        self._set(OK, seconds, loss)

    def throttle(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s

    def heal(self) -> None:
        self._set(OK, 0.0)

    async def _start(self) -> None:
        self._changed = asyncio.Event()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._handle, sock=sock)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == CUT:
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_w}
        try:
            await asyncio.gather(self._pump(reader, up_w), self._pump(up_r, writer))
        finally:
            for w in (writer, up_w):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward one direction: each chunk waits out the latency from when it arrived,
        and nothing moves while the link is a black hole."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                while self.mode == BLACKHOLE:
                    assert self._changed is not None
                    await self._changed.wait()
                late = self.latency
                if self.loss and random.random() < self.loss:
                    late += max(RTO_MIN, 2 * self.latency)  # resent after a timeout
                wait = arrived + late - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.mode == CUT:
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                await queue.put((time.monotonic(), data))
                if self.rate:  # reading no faster than the rate pushes back on the sender
                    await asyncio.sleep(len(data) / self.rate)
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender
            writer.transport.abort()
