"""Serving snapshots: a pinned image of the file, streamed in checksummed chunks, resumable.

    GET /snapshot?node=&url=[&session=ID&offset=N][&max_lag=S]
    body := (chunk[≤ CHUNK] crc32(chunk):u32)…   from `offset` to the image's end

A transfer that breaks off keeps its image pinned for `SESSION_GRACE` seconds: the
receiver asks again with the session and the offset it holds and gets the rest of the
same image. Once the session is gone (or the node restarted) it gets a new image under a
new id and starts over: never a file mixed from two images.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw
from aiohttp import web

from ..core import image as images
from ..core.positions import Position
from ..core.wire import (
    CHUNK_HEADER,
    EPOCH_HEADER,
    IMAGE_HEADER,
    META_HEADER,
    OFFSET_HEADER,
    SEQ_HEADER,
    SIZE_HEADER,
    SNAPSHOT_TYPE,
)
from ..errors import PeerUnavailable, SqlreplError
from . import metrics
from .http import error

log = logging.getLogger("sqlrepl")
#: Seconds an interrupted transfer's image stays pinned for the receiver to resume it.
SESSION_GRACE = 30.0
#: The same after the sender wrote the image's last byte: a link cut then can still lose
#: what sat in buffers on the way (seen in the tests behind a slow proxy).
SENT_GRACE = 5.0
#: How long a snapshot waits for app readers that keep the WAL from being checkpointed.
PIN_TIMEOUT = 10.0


def pin(path: Path, timeout: float = PIN_TIMEOUT) -> images.Image:
    """Pin an image of `path`, retrying while app readers keep the WAL from being
    checkpointed whole (each try holds the write lock for one checkpoint)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while (image := try_pin(path)) is None:
        if time.monotonic() > deadline:
            raise PeerUnavailable(
                f"{path}: an app's read transaction kept the WAL from being checkpointed "
                f"for {timeout:.0f} s; try the snapshot again"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return image


def try_pin(path: Path) -> images.Image | None:
    """One try at `image.pin`: None while readers or a writer hold it back."""
    try:
        return images.pin(path)
    except apsw.BusyError:  # an app held the write lock past the busy timeout: try again
        return None


@dataclass
class Session:
    image: images.Image
    idle_since: float | None = None  # None while a transfer is running
    sent: bool = False  # its last byte was written once

    def expired(self, now: float) -> bool:
        grace = SENT_GRACE if self.sent else SESSION_GRACE
        return self.idle_since is not None and now - self.idle_since > grace


class Sessions:
    """The images being served by one role of a node, kept for resumption."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.live: dict[str, Session] = {}

    async def open(self, wanted: str | None, offset: int) -> tuple[Session, int, bool]:
        """The session to serve: the one asked for at `offset`, else a new image (from 0).
        Also whether it is new."""
        self.reap()
        found = self.live.get(wanted or "")
        # The transfer it resumes may not have noticed yet that its connection is gone.
        for _ in range(50):
            if found is None or found.idle_since is not None:
                break
            await asyncio.sleep(0.1)
        if found and found.idle_since is not None and 0 <= offset <= found.image.size:
            found.idle_since, found.sent = None, False
            return found, offset - offset % images.CHUNK, False
        pinned = await asyncio.to_thread(pin, self.path)
        session = self.live[pinned.id] = Session(pinned)
        return session, 0, True

    def done(self, session: Session, whole: bool) -> None:
        session.idle_since = time.monotonic()
        session.sent |= whole
        # Unpin it once its grace ends even if no other snapshot is ever asked for: a
        # pinned image holds the WAL's checkpoints back.
        grace = SENT_GRACE if session.sent else SESSION_GRACE
        asyncio.get_running_loop().call_later(grace + 0.5, self.reap)

    def reap(self, everything: bool = False) -> None:
        now = time.monotonic()
        for key, s in list(self.live.items()):
            if everything or s.expired(now):
                del self.live[key]
                with contextlib.suppress(Exception):
                    s.image.close()

    def close(self) -> None:
        self.reap(everything=True)


async def serve_snapshot(
    request: web.Request,
    sessions: Sessions,
    on_taken: Callable[[Position], None] | None = None,
    refuse: Callable[[], str | None] | None = None,
) -> web.StreamResponse:
    """Stream a pinned image of the database from the offset asked for."""
    why = refuse() if refuse else None
    if why:
        return error(503, why)
    try:
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        return error(400, "offset must be an integer")
    try:
        session, offset, new = await sessions.open(request.query.get("session"), offset)
    except SqlreplError as exc:
        return error(503, str(exc))
    image = session.image
    whole = False
    reading: asyncio.Future[tuple[bytes, bytes]] | None = None
    started = time.monotonic()
    try:
        if on_taken:
            on_taken(image.position)
        chunks = -(-(image.size - offset) // images.CHUNK)
        response = web.StreamResponse(
            headers={
                "Content-Type": SNAPSHOT_TYPE,
                EPOCH_HEADER: str(image.position.epoch),
                SEQ_HEADER: str(image.position.seq),
                IMAGE_HEADER: image.id,
                SIZE_HEADER: str(image.size),
                OFFSET_HEADER: str(offset),
                CHUNK_HEADER: str(images.CHUNK),
                META_HEADER: json.dumps(
                    {k: image.meta.get(k) for k in ("cluster", "role", "node", "epoch")}
                ),
            }
        )
        response.content_length = image.size - offset + chunks * images.DIGEST_SIZE
        await response.prepare(request)
        if request.transport is not None:  # a deeper send buffer: fewer pauses per chunk
            request.transport.set_write_buffer_limits(high=4 * images.CHUNK)
        # Read (and hash) the next chunk while the current one is written to the socket.
        reading = asyncio.ensure_future(asyncio.to_thread(image.chunk, offset))
        while offset < image.size:
            block, digest = await reading
            offset += len(block)
            if offset < image.size:
                reading = asyncio.ensure_future(asyncio.to_thread(image.chunk, offset))
            await response.write(block)
            await response.write(digest)
        await response.write_eof()
        whole = True
        metrics.SNAPSHOTS.labels("out").inc()
        metrics.SNAPSHOT_SECONDS.labels("out").observe(time.monotonic() - started)
        metrics.SENT_BYTES.inc(image.size)
        how = "new image" if new else "resumed"
        log.info("served snapshot at %s (%d bytes, %s)", image.position, image.size, how)
        return response
    finally:
        if reading is not None and not reading.done():
            await asyncio.wait({reading})
        sessions.done(session, whole)
