"""Receiving a snapshot: every chunk checked as it arrives, written once, resumable.

A resumable download keeps its state in `<file>.json` beside the partial file: the
image's id and size and how many bytes are written (made durable first). Asked again, the
sender continues that image from there if it still holds it; otherwise it sends a new
image and the file starts over. The file is never a mix of two images.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from .client import SNAPSHOT_STALL, Client, expect_ok

Progress = Callable[[int, int], None]
#: A resumable download makes what it wrote durable, and records it, this often (and
#: when the transfer breaks off).
RECORD_EVERY = 16 << 20


@dataclass
class Received:
    """What a snapshot download brought: the image's position, meta and size."""

    position: Position
    meta: dict[str, Any]
    size: int
    resumed_at: int = 0


@dataclass
class Meter:
    """Bytes done of a transfer, for status and logs."""

    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)

    def view(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"done": self.done, "total": self.total, "bytes_per_s": round(self.done / elapsed)}


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
) -> Received:
    """Write the sender's snapshot to `path`, resuming a download recorded there."""
    state_path = Path(str(path) + ".json")
    state = _load(state_path) if resumable and path.exists() else None
    query = dict(params or {})
    if state:
        query.update(session=state["image"], offset=state["done"])
    async with client.get("/snapshot", query, None, SNAPSHOT_STALL) as response:
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
            f.seek(offset)
            if resumable:
                _save(state_path, record)
            recording = state_path if resumable else None
            await _receive(response, f, got.size, offset, chunk, progress, recording, record)
            await asyncio.to_thread(os.fsync, f.fileno())
        state_path.unlink(missing_ok=True)
        return got


def _answer(client: Client, response: aiohttp.ClientResponse) -> Received:
    try:
        h = response.headers
        meta = dict(json.loads(h[META_HEADER]), image=h[IMAGE_HEADER])
        position = Position(int(h[EPOCH_HEADER]), int(h[SEQ_HEADER]))
        return Received(position, meta, int(h[SIZE_HEADER]), int(h[OFFSET_HEADER]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolError(f"{client.url} sent a snapshot without its position") from exc


async def _receive(
    response: aiohttp.ClientResponse,
    f: Any,
    size: int,
    done: int,
    chunk: int,
    progress: Progress | None,
    state_path: Path | None,
    record: dict[str, Any],
) -> None:
    """Read, check and write chunks until the image is whole; each write runs in a thread
    while the next chunk arrives."""
    writing: asyncio.Future[None] | None = None
    recorded = written = done

    def keep(block: bytes, check: bytes, at: int) -> None:
        nonlocal written
        if images.digest(block) != check:  # hashing releases the GIL: beside the loop
            raise ProtocolError(f"snapshot chunk at byte {at} is corrupt (checksum mismatch)")
        f.write(block)
        written = at + len(block)

    try:
        while done < size:
            length = min(chunk, size - done)
            try:
                data = await response.content.readexactly(length + images.DIGEST_SIZE)
            except (asyncio.IncompleteReadError, aiohttp.ClientPayloadError) as exc:
                raise ProtocolError(f"snapshot transfer broke off after {done} bytes") from exc
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(
                asyncio.to_thread(keep, data[:length], data[length:], done)
            )
            done += length
            if progress:
                progress(done, size)
            if state_path is not None and done - recorded >= RECORD_EVERY:
                await writing
                await asyncio.to_thread(_record, f, state_path, record, done)
                recorded = done
    except (ProtocolError, aiohttp.ClientError, OSError):
        if writing is not None:
            await asyncio.wait({writing})
        if state_path is not None and written > recorded:  # resume from what was written
            await asyncio.to_thread(_record, f, state_path, record, written)
        raise
    finally:
        if writing is not None:
            await asyncio.wait({writing})
    if writing is not None:
        await writing
    if state_path is not None:
        await asyncio.to_thread(_record, f, state_path, record, done)


def _record(f: Any, state_path: Path, record: dict[str, Any], done: int) -> None:
    f.flush()
    os.fdatasync(f.fileno())
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
