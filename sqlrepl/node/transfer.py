"""Receiving a snapshot: every chunk checked as it arrives, written once, resumable.

A resumable download keeps its state in `<file>.json` beside the partial file: the
image's id and size and how many bytes are written (made durable first). Asked again, the
sender continues that image from there if it still holds it; otherwise it sends a new
image and the file starts over. The file is never a mix of two images.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import errno
import fcntl
import json
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

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
)
from ..errors import ProtocolError
from .client import SNAPSHOT_BUFFER, SNAPSHOT_STALL, Client, expect_ok

Progress = Callable[[int, int], None]
#: A resumable download makes what it wrote durable, and records it, this often (in the
#: background), and when the transfer breaks off.
RECORD_EVERY = 32 << 20


@dataclass
class Received:
    """What a snapshot download brought: the image's position, meta and size."""

    position: Position
    meta: dict[str, Any]
    size: int
    resumed_at: int = 0


def leftovers(path: Path) -> list[Path]:
    """A download's files: the partial file, its state, and any WAL left by a conversion."""
    return [Path(str(path) + s) for s in ("", ".json", ".json.tmp", "-wal", "-shm", "-journal")]


def discard(path: Path) -> None:
    for p in leftovers(path):
        p.unlink(missing_ok=True)


async def download(
    client: Client,
    path: Path,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
    resumable: bool = False,
    direct: bool = False,
) -> Received:
    """Write the sender's snapshot to `path`, resuming a download recorded there; with
    `direct`, around the page cache where the file system allows it."""
    state_path = Path(str(path) + ".json")
    state = _load(state_path) if resumable and path.exists() else None
    query = dict(params or {})
    if state:
        query.update(session=state["image"], offset=state["done"])
    async with client.get("/snapshot", query, None, SNAPSHOT_STALL, SNAPSHOT_BUFFER) as response:
        await expect_ok(response)
        got = _answer(client, response)
        offset = got.resumed_at
        same = state is not None and state["image"] == got.meta["image"]
        if offset and not (same and state and offset <= state["done"]):
            raise ProtocolError(f"{client.url} resumed a snapshot this node does not hold")
        if not same:
            discard(path)
        chunk = int(response.headers.get(CHUNK_HEADER, images.CHUNK))
        record = {"image": got.meta["image"], "size": got.size, "done": offset}
        with open(path, "r+b" if same else "wb") as f:
            f.truncate(offset)
        if resumable:
            _save(state_path, record)
        fd = _open_for_writing(path, direct)
        try:
            recording = state_path if resumable else None
            await _receive(response, fd, got.size, offset, chunk, progress, recording, record)
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        state_path.unlink(missing_ok=True)
        return got


def _open_for_writing(path: Path, direct: bool) -> int:
    """A descriptor that writes around the page cache (O_DIRECT) if `direct` and the file
    system allows it: a follower's image is written once and not read back whole, and
    page-cache writes cost this machine 1.5 s of CPU per GiB where direct ones cost 0.1 s."""
    flags = os.O_WRONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # tmpfs and some others refuse O_DIRECT
            raise
        return os.open(path, os.O_WRONLY)


def _answer(client: Client, response: aiohttp.ClientResponse) -> Received:
    try:
        h = response.headers
        meta = dict(json.loads(h[META_HEADER]), image=h[IMAGE_HEADER])
        position = Position(int(h[EPOCH_HEADER]), int(h[SEQ_HEADER]))
        return Received(position, meta, int(h[SIZE_HEADER]), int(h[OFFSET_HEADER]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"{client.url} sent a snapshot without its position") from exc


class _Writer:
    """Checks and writes chunks in order on a thread of its own, from a ring of
    page-aligned buffers (anonymous maps, as direct writes need): the event loop fills
    the next buffer while earlier ones are checked and written."""

    DEPTH = 4

    def __init__(self, fd: int, chunk: int, written: int = 0) -> None:
        self.fd = fd
        self.buffers = [mmap.mmap(-1, chunk + images.DIGEST_SIZE) for _ in range(self.DEPTH)]
        self.pool = concurrent.futures.ThreadPoolExecutor(1, "snapshot-writer")
        self.queued: collections.deque[asyncio.Future[None]] = collections.deque()
        self.written = written  # every byte below this is written (writes run in order)

    async def free(self, index: int) -> memoryview:
        """Buffer `index`, once the write that used it last is done."""
        if len(self.queued) == self.DEPTH:
            await self.queued.popleft()
        return memoryview(self.buffers[index])

    def write(self, frame: memoryview, length: int, at: int) -> None:
        loop = asyncio.get_running_loop()
        self.queued.append(loop.run_in_executor(self.pool, self._keep, frame, length, at))

    async def drain(self) -> None:
        """Wait for every queued write (raising what the first failed one met)."""
        while self.queued:
            await self.queued.popleft()

    async def settle(self) -> None:
        """Wait for every queued write, whatever they meet (what they met is already
        being raised, or was: retrieved here, so that it is not logged again as a
        'Future exception was never retrieved' traceback)."""
        if self.queued:
            await asyncio.wait(set(self.queued))
            for write in self.queued:
                _retrieve(write)
            self.queued.clear()
        self.pool.shutdown(wait=True)

    def _keep(self, frame: memoryview, length: int, at: int) -> None:
        block = frame[:length]
        if images.digest(block) != frame[length : length + images.DIGEST_SIZE]:
            raise ProtocolError(f"snapshot chunk at byte {at} is corrupt (checksum mismatch)")
        try:
            os.pwrite(self.fd, block, at)
        except OSError as exc:  # a direct write of a last, partial block: write it buffered
            if exc.errno != errno.EINVAL:
                raise
            flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~getattr(os, "O_DIRECT", 0))
            os.pwrite(self.fd, block, at)
        self.written = at + length


async def _receive(
    response: aiohttp.ClientResponse,
    fd: int,
    size: int,
    done: int,
    chunk: int,
    progress: Progress | None,
    state_path: Path | None,
    record: dict[str, Any],
) -> None:
    """Read chunks into the writer's buffers until the image is whole; a resumable
    download makes what it wrote durable, then records it, in the background."""
    writer = _Writer(fd, chunk, written=done)
    recorded = done
    syncing: asyncio.Future[None] | None = None

    def sync(upto: int) -> None:
        os.fdatasync(fd)
        _save_done(state_path, record, upto)

    which, filled = 0, 0
    buffer = await writer.free(which)
    length = min(chunk, size - done)
    try:
        async for piece in response.content.iter_any():
            view = memoryview(piece)
            while view:
                if done >= size:
                    await writer.drain()  # a corrupt chunk before them is what to report
                    raise ProtocolError("snapshot has more bytes than it announced")
                need = length + images.DIGEST_SIZE
                take = min(need - filled, len(view))
                buffer[filled : filled + take] = view[:take]
                filled, view = filled + take, view[take:]
                if filled < need:
                    continue
                writer.write(buffer, length, done)
                done += length
                which, filled = (which + 1) % writer.DEPTH, 0
                buffer = await writer.free(which)
                length = min(chunk, size - done)
                if progress:
                    progress(done, size)
                idle = syncing is None or syncing.done()
                if state_path and done - recorded >= RECORD_EVERY and idle:
                    if syncing is not None:
                        await syncing  # (raises what it met)
                    await writer.drain()
                    syncing = asyncio.ensure_future(asyncio.to_thread(sync, done))
                    recorded = done
        if done < size:
            raise ProtocolError(f"snapshot transfer broke off after {done} bytes")
        await writer.drain()
    except (ProtocolError, aiohttp.ClientError, OSError) as exc:
        await writer.settle()
        if syncing is not None:
            await asyncio.wait({syncing})
            _retrieve(syncing)
        if state_path is not None and writer.written > recorded:  # resume from there
            await asyncio.to_thread(sync, writer.written)
        if isinstance(exc, aiohttp.ClientPayloadError):
            raise ProtocolError(
                f"snapshot transfer broke off after {writer.written} bytes"
            ) from exc
        raise
    finally:
        await writer.settle()
        if syncing is not None and not syncing.done():
            await asyncio.wait({syncing})
            _retrieve(syncing)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark what a finished future met as seen (the transfer raises its own error)."""
    if future.done() and not future.cancelled():
        future.exception()


def _save_done(state_path: Path | None, record: dict[str, Any], done: int) -> None:
    if state_path is not None:
        record["done"] = done
        _save(state_path, record)


def _load(state_path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(state_path.read_text())
        if isinstance(state, dict) and {"image", "done"} <= state.keys():
            return state
    return None


def _save(state_path: Path, record: dict[str, Any]) -> None:
    tmp = state_path.with_name(state_path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, state_path)
