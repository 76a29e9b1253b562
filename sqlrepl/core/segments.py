"""Archive segments: every batch an archive applied, in order, each record checksummed.

    record := MAGIC length:u64 crc32(batch):u32
              before.epoch:i64 before.seq:i64 after.epoch:i64 after.seq:i64
              received_at:f64 batch[length]                            (big endian)

`batch` is the leader's batch stream exactly as received: replayed on a copy of the
archive's snapshot at `before`, it gives the leader's state at `after`, a committed
position (a batch is built in one read transaction). A segment is written by appending;
a sealed one gets a `.sha256` beside it. Names:

    <chain>-<created, ns>-<epoch>-<seq>.open|.seg     (the position it starts at)

A chain is one unbroken line of batches from a base snapshot; a new one starts whenever
the archive cannot vouch for continuity (a first start, a re-bootstrap, a crash between
applying a batch and recording it).
"""

from __future__ import annotations

import hashlib
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import DatabaseError
from .positions import Position

MAGIC = b"SQRA"
#: The magic of a record still being written.
PENDING = b"SQRP"
HEAD = struct.Struct(">4sQIqqqqd")
OPEN, SEALED = ".open", ".seg"
NAME = re.compile(
    r"^(?P<chain>\d+)-(?P<created>\d+)-(?P<epoch>\d+)-(?P<seq>\d+)(?P<ext>\.open|\.seg)$"
)
SNAPSHOT_NAME = re.compile(r"^(?P<chain>\d+)-(?P<created>\d+)-(?P<epoch>\d+)-(?P<seq>\d+)\.db$")


@dataclass(frozen=True)
class Record:
    before: Position
    after: Position
    received_at: float
    offset: int  # of the batch bytes in the segment
    length: int
    crc: int


@dataclass
class Scan:
    """A segment's records, and what is wrong with it (None: nothing)."""

    records: list[Record]
    problem: str | None = None
    #: Where the good records end (a torn tail after it is the last write, cut off).
    end: int = 0
    #: The SHA-256 of the whole file, when the scan read all of it.
    sha256: str | None = None


def name(chain: int, created: int, start: Position, ext: str) -> str:
    return f"{chain:020d}-{created:020d}-{start.epoch}-{start.seq}{ext}"


def head(
    before: Position,
    after: Position,
    received_at: float,
    length: int,
    crc: int,
    magic: bytes = MAGIC,
) -> bytes:
    return HEAD.pack(
        magic, length, crc, before.epoch, before.seq, after.epoch, after.seq, received_at
    )


def scan(path: Path) -> Scan:
    """Read a segment's records, checking each one's checksum."""
    records: list[Record] = []
    problem: str | None = None
    whole = hashlib.sha256()  # of every byte read, in order: the file's, if read to its end
    offset = 0
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        while offset < size:
            f.seek(offset)
            raw = f.read(HEAD.size)
            whole.update(raw)
            if len(raw) < HEAD.size:
                problem = f"{path.name}: torn record at byte {offset}"
                break
            magic, length, crc, be, bs, ae, aseq, at = HEAD.unpack(raw)
            start = offset + HEAD.size
            if magic != MAGIC or start + length > size:
                problem = f"{path.name}: torn or corrupt record at byte {offset}"
                break
            if _crc(f, start, length, whole) != crc:
                problem = f"{path.name}: record at byte {offset} fails its checksum"
                break
            records.append(
                Record(Position(be, bs), Position(ae, aseq), float(at), start, length, crc)
            )
            offset = start + length
    digest = whole.hexdigest() if problem is None else None
    return Scan(records, problem, offset, digest)


def _crc(f: BinaryIO, start: int, length: int, whole: Any) -> int:
    f.seek(start)
    crc = 0
    for block in _blocks(f, length):
        crc = zlib.crc32(block, crc)
        whole.update(block)
    return crc


def _blocks(f: BinaryIO, length: int) -> Iterator[bytes]:
    while length > 0:
        block = f.read(min(length, 1 << 20))
        if not block:
            return
        length -= len(block)
        yield block


def batch_blocks(path: Path, record: Record) -> Iterator[bytes]:
    """A record's batch in blocks of 1 MiB (a batch may be larger than memory); raises
    DatabaseError after the last block if the batch fails its checksum."""
    crc = 0
    with open(path, "rb") as f:
        f.seek(record.offset)
        for block in _blocks(f, record.length):
            crc = zlib.crc32(block, crc)
            yield block
    if crc != record.crc:
        raise DatabaseError(f"{path.name}: batch at byte {record.offset} fails its checksum")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in _blocks(f, path.stat().st_size):
            digest.update(block)
    return digest.hexdigest()


def follows(record: Record, at: Position) -> bool:
    """Does `record` continue from `at`? (A newer epoch accepted without a batch moves the
    position's epoch alone.)"""
    return record.before.seq == at.seq and record.before.epoch >= at.epoch


def sidecar(path: Path) -> tuple[str, Position | None] | None:
    """A sealed segment's or snapshot's recorded digest (and a segment's end position)."""
    try:
        fields = Path(str(path) + ".sha256").read_text().split()
    except OSError:
        return None
    if not fields:
        return None
    end = Position(int(fields[1]), int(fields[2])) if len(fields) == 3 else None
    return fields[0], end


def sealed_end(path: Path) -> Position | None:
    found = sidecar(path)
    return found[1] if found else None
