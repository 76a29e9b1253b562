"""A batch spool: written by the builder thread, sent from the event loop at the same time.

The leader builds a batch inside one read transaction. Sending it only after the build
would make the follower wait for the whole build before it applies a byte; streaming it
straight from the builder would hold the read transaction (and WAL checkpoints) hostage
to the network. The spool does both: the builder writes at its own pace, the sender
follows it. Small batches stay in memory; past `memory` bytes the spool moves to a
temporary file, so a batch of any size uses bounded memory.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading

#: Wake the sender after this many new bytes (and when the build ends).
NOTIFY_EVERY = 256 << 10


class Abandoned(Exception):
    """Nobody will read this spool: the build writing it stops."""


class Spool:
    def __init__(self, loop: asyncio.AbstractEventLoop, memory: int) -> None:
        self._loop = loop
        self._memory = memory
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._file: int | None = None
        self._notified = 0
        self._changed = asyncio.Event()
        self.size = 0
        self.finished = False
        self.abandoned = False

    # -- builder thread -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.abandoned:
            raise Abandoned()
        with self._lock:
            if self._file is None and self.size + len(data) > self._memory:
                self._file, path = tempfile.mkstemp(prefix="sqlrepl-batch-")
                os.unlink(path)
                os.write(self._file, self._buf)
                self._buf = bytearray()
            if self._file is None:
                self._buf += data
            else:
                os.write(self._file, data)
            self.size += len(data)
        if self.size - self._notified >= NOTIFY_EVERY:
            self._notify()

    def finish(self) -> None:
        """The builder is done (or failed): no more writes."""
        self.finished = True
        self._notify()

    def _notify(self) -> None:
        self._notified = self.size
        self._loop.call_soon_threadsafe(self._changed.set)

    # -- event loop ---------------------------------------------------------------
    def read(self, offset: int, limit: int) -> bytes:
        """Up to `limit` bytes from `offset`, of what has been written so far."""
        with self._lock:
            n = min(limit, self.size - offset)
            if n <= 0:
                return b""
            if self._file is None:
                return bytes(self._buf[offset : offset + n])
            return os.pread(self._file, n, offset)

    async def changed(self) -> None:
        """Wait until more bytes arrive or the build ends."""
        await self._changed.wait()
        self._changed.clear()

    def abandon(self) -> None:
        """The answer is gone (the follower hung up, the role ended): stop the build."""
        self.abandoned = True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
            self._buf = bytearray()
