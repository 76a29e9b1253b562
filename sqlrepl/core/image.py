"""A database's consistent image, read straight from its file: no copy on the sender.

`pin` gives a read transaction that sees the database file alone. It checkpoints the
WAL (PASSIVE: it waits for nobody) and, if that got everything into the file, begins
reading: SQLite lets a reader that finds the WAL wholly checkpointed read the file alone
(read-mark 0), and no checkpoint may write to the file while such a reader lives. A
commit between the checkpoint and the reader's start would spoil that, so the pin checks,
on a connection of its own, that none came (`PRAGMA data_version` did not move);
otherwise it lets go and the caller tries again. Apps go on committing into the WAL
meanwhile; only checkpoints wait, for as long as the image is read. So the file's first
`page_count` pages are the image, byte for byte, and are read with plain reads
(Litestream's approach, without parsing the WAL).

No lock an app could notice is taken: an app's deferred transaction that has read and
then writes while another connection holds the write lock gets `database is locked` at
once (SQLite calls no busy handler for that upgrade). Only where commits never pause long
enough does the caller pin with `hold_writers`, for about a millisecond.

The file is read through SQLite's own VFS (`apsw.VFSFile`), never through a file object
of ours: closing a second descriptor of a file would drop this process's POSIX locks on
it, which SQLite's unix VFS alone knows how to avoid.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from ..errors import DatabaseError
from .db import connect, read_meta, scalar
from .positions import Position, read_position

#: The unit of transfer and of checksums.
CHUNK = 1 << 20
DIGEST_SIZE = 4


def digest(block: bytes | memoryview) -> bytes:
    """A chunk's checksum: its CRC-32, as the batch frames carry (4 GB/s here, where
    SHA-256 runs at 1.7: a transfer checks every byte twice)."""
    return zlib.crc32(block).to_bytes(DIGEST_SIZE, "big")


@dataclass
class Image:
    """A pinned, consistent image of one database file."""

    path: Path
    position: Position
    meta: dict[str, Any]
    page_size: int
    size: int
    reader: apsw.Connection
    file: Any = field(repr=False)
    id: str = field(default_factory=lambda: os.urandom(8).hex())

    def read(self, offset: int, length: int = CHUNK) -> bytes:
        """Bytes [offset, offset + length) of the image (shorter at its end)."""
        length = max(0, min(length, self.size - offset))
        return bytes(self.file.xRead(length, offset)) if length else b""

    def chunk(self, offset: int) -> tuple[bytes, bytes]:
        """The chunk at `offset` and its checksum."""
        block = self.read(offset)
        return block, digest(block)

    def close(self) -> None:
        self.file.xClose()
        if self.reader.in_transaction:
            self.reader.execute("ROLLBACK")
        self.reader.close()


def settle(path: Path) -> None:
    """Checkpoint what the WAL holds (it may take a sync): done before a pin, the
    checkpoint inside the pin's window has little or nothing left to do."""
    conn = connect(path)
    try:
        _checkpoint(conn)
    finally:
        conn.close()


def pin(path: Path, hold_writers: bool = False, settled: bool = False) -> Image | None:
    """Pin a consistent image of the database at `path` (see the module's doc); None
    when a commit came in between, or app readers keep the WAL from being checkpointed
    whole: try again. With `hold_writers`, no commit can come in between: the write lock
    is held from before the checkpoint until the reader began (about a millisecond).
    `settled`: the caller just ran `settle`."""
    checkpointer, observer = connect(path), connect(path)
    writer = connect(path) if hold_writers else None
    reader = connect(path, readonly=True)
    try:
        if not settled:
            _checkpoint(checkpointer)  # the bulk of the WAL, outside the window below
        if writer is not None:
            writer.execute("BEGIN IMMEDIATE")
        seen = _data_version(observer)
        try:
            frames = _checkpoint(checkpointer)
            if frames is not None:
                reader.execute("BEGIN")
                meta = read_meta(reader)  # the read transaction starts here
        finally:
            if writer is not None:
                writer.execute("ROLLBACK")
        # No other connection committed (or restarted the WAL) from before the checkpoint
        # until the reader began: it found the WAL wholly in the file. (-1 frames: not in
        # WAL mode, where the reader's shared lock freezes the file.)
        if frames is None or (frames >= 0 and _data_version(observer) != seen):
            reader.close()
            return None
        page_size = int(scalar(reader, "PRAGMA page_size"))
        size = int(scalar(reader, "PRAGMA page_count")) * page_size
        # A plain file has no position: copied all the same, refused when stamped.
        position = read_position(reader) if "cluster" in meta else Position(0, 0)
        flags = [apsw.SQLITE_OPEN_MAIN_DB | apsw.SQLITE_OPEN_READONLY, 0]
        file = apsw.VFSFile("", os.fspath(path), flags)
        if file.xFileSize() < size:  # the file must hold the whole image: never a torn one
            file.xClose()
            raise DatabaseError(f"{path} is shorter than its own page count")
        return Image(path, position, meta, page_size, size, reader, file)
    except BaseException:
        if reader.in_transaction:
            reader.execute("ROLLBACK")
        reader.close()
        raise
    finally:
        for conn in (checkpointer, observer, writer):
            if conn is not None:
                conn.close()


def _data_version(conn: apsw.Connection) -> int:
    """Moves whenever another connection commits (a read of the WAL's index header)."""
    return int(scalar(conn, "PRAGMA data_version"))


def _checkpoint(conn: apsw.Connection) -> int | None:
    """A PASSIVE checkpoint: the frames in the WAL if it got them all into the file (-1
    for a file not in WAL mode); None if it did not, or could not run (another
    checkpoint was running: SQLite then reports -1 frames, as for no WAL at all)."""
    busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    if busy or frames != done:
        return None
    return int(str(frames))


def copy(image: Image, dest: Path) -> None:
    """Write the pinned `image` to the new file `dest`, durably."""
    with open(dest, "xb") as out:
        for offset in range(0, image.size, CHUNK):
            out.write(image.read(offset))
        out.flush()
        os.fsync(out.fileno())


def check_header(path: Path, size: int) -> None:
    """A received image is a SQLite file whose header agrees with the size sent: with every
    chunk's checksum checked on arrival, what a bootstrap verifies before using the file
    (`quick_check` re-reads all of it: 0.6 s per GiB here, and far more from disk)."""
    with open(path, "rb") as f:
        header = f.read(100)
        actual = f.seek(0, os.SEEK_END)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise DatabaseError(f"{path} is not a SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if actual != size or pages * page_size != size:
        raise DatabaseError(
            f"{path} is not the image announced: {actual} bytes, {pages} pages of "
            f"{page_size}, {size} announced"
        )
