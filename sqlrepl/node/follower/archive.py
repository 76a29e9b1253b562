"""A continuous archive: a follower that also keeps every batch it applies, as checksummed
segment files, and periodic snapshots of its own file (`core/segments.py` has the format).

Each batch is recorded after it is applied and made durable before the next pull. A
snapshot starts a chain when the archive cannot vouch for continuity; periodic ones
within a chain bound how much a restore replays. Retention removes snapshots older than
`keep_days` beyond the newest `keep`, and the segments no remaining snapshot needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import BinaryIO

from ...core import image, segments, snapshot, tempfiles
from ...core.db import durable
from ...core.positions import Position
from ...errors import PeerUnavailable
from ..configs import ArchiveConfig
from ..snapshots import try_pin
from .bootstrap import LocalFile

log = logging.getLogger("sqlrepl.archive")
#: A segment is sealed (and a new one begun) at this size or age.
SEGMENT_BYTES = 64 << 20
ZERO = Position(0, 0)


class Recorder:
    def __init__(self, config: ArchiveConfig) -> None:
        self.config = config
        self.segments = config.directory / "segments"
        self.snapshots = config.directory / "snapshots"
        self.chain = 0
        self.file: BinaryIO | None = None
        self.path: Path | None = None
        self.opened_at = 0.0
        self.last: Position | None = None  # the position the last record ends at
        self.based_at = 0.0
        self.pending: tuple[int, int] | None = None  # (offset, crc) of the record being fed
        self.received_at = 0.0
        self.snapshotting: asyncio.Task[None] | None = None
        #: `commit` runs in a thread and may seal a segment; a stop must wait for it.
        self._lock = threading.Lock()

    # -- continuity -------------------------------------------------------------------

    def resume(self, position: Position) -> bool:
        """Continue the newest chain if it ends where the follower's file stands."""
        for d in (self.segments, self.snapshots):
            d.mkdir(parents=True, exist_ok=True)
            tempfiles.remove_stale(d)
        names = sorted(p.name for p in self.segments.iterdir() if segments.NAME.match(p.name))
        if not names:
            return False
        newest = self.segments / names[-1]
        scan = segments.scan(newest)
        match = segments.NAME.match(newest.name)
        assert match
        start = Position(int(match["epoch"]), int(match["seq"]))
        end = scan.records[-1].after if scan.records else start
        if scan.problem and newest.suffix == segments.OPEN:
            with open(newest, "r+b") as f:  # a torn last write: cut it off
                f.truncate(scan.end)
        elif scan.problem:
            return False
        if end.seq != position.seq or end.epoch > position.epoch:
            return False
        self.chain = int(match["chain"])
        if newest.suffix == segments.OPEN:  # left by a daemon that was killed: seal it
            self.path, self.file, self.last = newest, open(newest, "r+b"), end  # noqa: SIM115
        shots = [p for p in self.snapshots.iterdir() if p.name.startswith(match["chain"] + "-")]
        self.based_at = max((p.stat().st_mtime for p in shots), default=0.0)
        self._seal()
        self._open(position)
        return True

    async def base(self, file: LocalFile, leader: str) -> None:
        """Start a new chain at the follower's position: a snapshot of its file."""
        self._seal()
        self.chain = time.time_ns()
        where = await self._snapshot(file, leader)
        self._open(where)
        log.info("archive: a new chain begins at %s", where)

    # -- recording ----------------------------------------------------------------------

    def begin(self) -> None:
        assert self.file is not None
        self.pending = (self.file.seek(0, os.SEEK_END), 0)
        self.received_at = time.time()  # the leader's state then was at least this batch's
        # Until `commit` fills it in, the head says "pending": a crash leaves a torn tail.
        self.file.write(segments.head(ZERO, ZERO, 0.0, 0, 0, segments.PENDING))

    def feed(self, block: bytes) -> None:
        assert self.file is not None and self.pending is not None
        self.file.write(block)
        self.pending = (self.pending[0], zlib.crc32(block, self.pending[1]))

    def abort(self) -> None:
        if self.file is not None and self.pending is not None:
            self.file.truncate(self.pending[0])
            self.file.seek(0, os.SEEK_END)
        self.pending = None

    def commit(self, before: Position, after: Position) -> None:
        """Fill in the record's head and make it durable (in a thread)."""
        with self._lock:
            assert self.file is not None and self.pending is not None
            offset, crc = self.pending
            self.file.flush()
            end = self.file.seek(0, os.SEEK_END)
            length = end - offset - segments.HEAD.size
            head = segments.head(before, after, self.received_at, length, crc)
            os.pwrite(self.file.fileno(), head, offset)
            os.fdatasync(self.file.fileno())
            self.pending = None
            self.last = after
            age = time.monotonic() - self.opened_at
            if end > SEGMENT_BYTES or age > self.config.segment_interval:
                self._seal()
                self._open(after)

    def snapshot_if_due(self, file: LocalFile, leader: str) -> None:
        """Start a periodic snapshot in the background if one is due and none runs."""
        idle = self.snapshotting is None or self.snapshotting.done()
        if idle and time.time() - self.based_at >= self.config.snapshot_interval:
            self.snapshotting = asyncio.ensure_future(self.periodic(file, leader))

    async def periodic(self, file: LocalFile, leader: str) -> None:
        """A snapshot within the chain (in the background) and retention."""
        try:
            await self._snapshot(file, leader)
            await asyncio.to_thread(prune, self.config, time.time())
        except Exception as exc:  # the next batch tries again
            log.warning("archive: snapshot failed: %s", exc)

    # -- files --------------------------------------------------------------------------

    def _open(self, start: Position) -> None:
        self.path = self.segments / segments.name(self.chain, time.time_ns(), start, ".open")
        # Not "a": a record's head is written in place once its batch is whole (pwrite),
        # which an O_APPEND file would append instead.
        self.file = open(self.path, "xb")  # noqa: SIM115 - kept open across batches
        durable(self.path)
        self.opened_at = time.monotonic()
        self.last = start

    def _seal(self) -> None:
        if self.file is None or self.path is None:
            return
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        sealed = self.path.with_suffix(segments.SEALED)
        digest = segments.sha256_of(self.path)
        end = self.last or ZERO
        sidecar = Path(str(sealed) + ".sha256")
        sidecar.write_text(f"{digest} {end.epoch} {end.seq}\n")
        os.replace(self.path, sealed)
        durable(sealed)

    async def _snapshot(self, file: LocalFile, leader: str) -> Position:
        assert file.db is not None
        db = file.path
        for _ in range(100):  # app readers of the archive's file may hold its WAL back
            # Between two batches: at a known position, and the moment it held then.
            pinned, now = await file.db.run(_pin_now, db)
            if pinned is not None:
                break
            await asyncio.sleep(0.1)
        else:
            raise PeerUnavailable(f"{db}: could not pin an image for the archive's snapshot")
        where = pinned.position
        self.based_at = now
        name = f"{self.chain:020d}-{int(now * 1e9):020d}-{where.epoch}-{where.seq}.db"
        path = self.snapshots / name
        tmp = tempfiles.temp_path(path)
        try:
            await asyncio.to_thread(image.copy, pinned, tmp)
        finally:
            pinned.close()
        try:
            await asyncio.to_thread(snapshot.stamp, tmp, now, leader)
            digest = await asyncio.to_thread(segments.sha256_of, tmp)
            Path(str(path) + ".sha256").write_text(digest + "\n")
            os.replace(tmp, path)
            durable(path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("archive: snapshot %s at %s", path.name, where)
        return where

    def close(self) -> None:
        """Seal the open segment (after a commit still running in its thread)."""
        with self._lock, contextlib.suppress(OSError):
            self._seal()


async def start(
    recorder: Recorder, file: LocalFile, leader: str, where: Position, rebase: bool
) -> bool:
    """Continue the archive's newest chain from the file's position (`where`), or begin a
    new one."""
    if rebase or not await asyncio.to_thread(recorder.resume, where):
        await recorder.base(file, leader)
    return True


async def recorded(
    recorder: Recorder, file: LocalFile, leader: str, before: Position, after: Position
) -> None:
    """The batch just applied is recorded durably; a periodic snapshot starts if due."""
    await asyncio.to_thread(recorder.commit, before, after)
    recorder.snapshot_if_due(file, leader)


def prune(config: ArchiveConfig, now: float) -> list[Path]:
    """Drop snapshots no rule keeps (never the newest) and segments no snapshot needs:
    those of a chain that ends before every snapshot of that chain kept."""
    shots = sorted(
        (
            p
            for p in (config.directory / "snapshots").iterdir()
            if segments.SNAPSHOT_NAME.match(p.name)
        ),
        key=lambda p: p.name.split("-")[1],
    )
    gone: list[Path] = []
    for rank, p in enumerate(reversed(shots)):
        young = now - p.stat().st_mtime < config.keep_days * 86400
        if rank >= max(config.keep, 1) and not young:
            gone.append(p)
    kept: dict[int, int] = {}  # chain -> the lowest seq a kept snapshot starts at
    for p in shots:
        m = segments.SNAPSHOT_NAME.match(p.name)
        if p not in gone and m:
            chain = int(m["chain"])
            kept[chain] = min(kept.get(chain, int(m["seq"])), int(m["seq"]))
    for p in (config.directory / "segments").iterdir():
        m = segments.NAME.match(p.name)
        if not m or m["ext"] != segments.SEALED:
            continue
        end = segments.sealed_end(p)
        floor = kept.get(int(m["chain"]))
        if floor is None or (end is not None and end.seq <= floor):
            gone.append(p)
    for p in gone:
        p.unlink(missing_ok=True)
        Path(str(p) + ".sha256").unlink(missing_ok=True)
    return gone


def _pin_now(db: Path) -> tuple[image.Image | None, float]:
    """A pinned image and when it was pinned (a restore `--at` a time compares that)."""
    return try_pin(db), time.time()
