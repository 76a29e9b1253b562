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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
#: A new receiver shares an image pinned this recently instead of waiting for it to go.
SHARE_AGE = 30.0
#: How long a snapshot waits for app readers that keep the WAL from being checkpointed.
PIN_TIMEOUT = 10.0
#: How long a pin waits for a pause between commits before it holds writers off.
LOCK_FREE_FOR = 2.0


class Attempts:
    """Tries at pinning an image: without a lock apps could notice while commits pause
    now and then; holding writers off for the moment of the pin (about a millisecond) once
    they have not paused for `LOCK_FREE_FOR` seconds; given up after `timeout` (app
    readers keep the WAL from being checkpointed whole)."""

    def __init__(self, path: Path, timeout: float = PIN_TIMEOUT) -> None:
        self.path, self.timeout = path, timeout
        self.started = time.monotonic()
        self.pause = 0.0005

    @property
    def hold_writers(self) -> bool:
        return time.monotonic() - self.started > LOCK_FREE_FOR

    def failed(self) -> float:
        """The pause before the next try (raises once the time is up)."""
        if time.monotonic() - self.started > self.timeout:
            raise PeerUnavailable(
                f"{self.path}: could not pin an image for {self.timeout:.0f} s (an app's "
                "read transaction keeps the WAL from being checkpointed?); try the snapshot again"
            )
        self.pause = min(self.pause * 2, 0.01)
        return self.pause * random.random()

    def pinned(self, image: images.Image, held: bool) -> images.Image:
        if held:
            log.warning(
                "%s: commits never paused for %.0f s; pinned under the write lock",
                self.path,
                LOCK_FREE_FOR,
            )
        return image


def pin(path: Path) -> images.Image:
    """Pin an image of `path` (`Attempts` says how), from a thread of its own."""
    tries = Attempts(path)
    while True:
        held = tries.hold_writers
        if (image := try_pin(path, held)) is not None:
            return tries.pinned(image, held)
        time.sleep(tries.failed())


async def pin_in_loop(path: Path) -> images.Image:
    """The same from a daemon: the pin's short window runs on the event loop's thread, so
    that no other thread of the daemon takes the GIL in the middle of it (5 ms a switch,
    enough for an app's commit to spoil the window every time); the checkpoint before it,
    which may sync, runs in a thread."""
    tries = Attempts(path)
    while True:
        await asyncio.to_thread(images.settle, path)
        held = tries.hold_writers
        if (image := try_pin(path, held, settled=True)) is not None:
            return tries.pinned(image, held)
        await asyncio.sleep(tries.failed())


def try_pin(path: Path, hold_writers: bool = False, settled: bool = False) -> images.Image | None:
    """One try at `image.pin`: None when it must be tried again."""
    try:
        return images.pin(path, hold_writers, settled)
    except apsw.BusyError:  # (a reader meets it while another connection recovers the WAL)
        return None


@dataclass
class Session:
    """A pinned image and the transfers reading it."""

    image: images.Image
    pinned_at: float = field(default_factory=time.monotonic)
    active: int = 0  # transfers reading it now
    idle_since: float = field(default_factory=time.monotonic)
    sent: bool = False  # the last transfer to end wrote its last byte

    def join(self) -> None:
        """A transfer begins reading the image."""
        self.active += 1

    def leave(self, whole: bool) -> None:
        """A transfer ended (`whole`: it wrote the image's last byte)."""
        self.active -= 1
        self.idle_since = time.monotonic()
        self.sent = whole

    def expired(self, now: float) -> bool:
        grace = SENT_GRACE if self.sent else SESSION_GRACE
        return self.active == 0 and now - self.idle_since > grace


class Sessions:
    """The images being served by one role of a node, kept for resumption. Transfers
    share an image: a receiver resuming one asks for it by id; a new receiver is given
    one pinned in the last `SHARE_AGE` seconds (a pinned image keeps the WAL from being
    checkpointed whole, so no second one could be pinned beside it) and still read or
    waiting to be resumed; one whose transfers all ended whole is unpinned for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.live: dict[str, Session] = {}

    async def open(self, wanted: str | None, offset: int) -> tuple[Session, int, bool]:
        """The session to serve: the one asked for at `offset`, else a recent one or a
        new image (from 0). Also whether it is new."""
        self.reap()
        now = time.monotonic()
        found = self.live.get(wanted or "")
        if found is not None and 0 <= offset <= found.image.size:
            offset -= offset % images.CHUNK
        else:
            self.reap(sent=True)  # a new receiver: what others finished need wait no more
            recent = [x for x in self.live.values() if now - x.pinned_at < SHARE_AGE]
            found, offset = (max(recent, key=lambda x: x.pinned_at) if recent else None), 0
        new = found is None
        if found is None:
            found = Session(await pin_in_loop(self.path))
            self.live[found.image.id] = found
        found.join()
        return found, offset, new

    def done(self, session: Session, whole: bool) -> None:
        session.leave(whole)
        # Unpin it once its grace ends even if no other snapshot is ever asked for: a
        # pinned image holds the WAL's checkpoints back.
        grace = SENT_GRACE if whole else SESSION_GRACE
        asyncio.get_running_loop().call_later(grace + 0.5, self.reap)

    def reap(self, everything: bool = False, sent: bool = False) -> None:
        """Unpin the images whose grace ended (`everything`; or with `sent`, also those
        whose last transfer ended whole)."""
        now = time.monotonic()
        for key, x in list(self.live.items()):
            if everything or x.expired(now) or (sent and x.sent and x.active == 0):
                del self.live[key]
                with contextlib.suppress(Exception):
                    x.image.close()

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
