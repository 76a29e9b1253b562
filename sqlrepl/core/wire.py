"""The wire protocol: batch framing, the batch header and table shapes, HTTP names.

    frame   := length:u32 crc32:u32 payload[length]     (big endian)
    stream  := header frame, data frames…, end frame

Each payload is one msgpack message. A frame is at most the leader's frame size
(`--frame-size`) long: a message larger than that (one row with a large key, say) is cut
into several frames, each but the last with the top bit of `length` set (`MORE`), and
joined again by the reader. A stream that stops before its end frame, or any frame whose
CRC does not match, is rejected whole: the follower applies nothing from it. The header
(`Header`) and each table's shape (`TableShape`) are defined here once, for the builder
and the applier.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..config import DEFAULT_FRAME_SIZE, MAX_FRAME_SIZE
from ..errors import ProtocolError

FRAME_HEAD = struct.Struct(">II")
#: Refuse frames larger than this (a corrupt length must not make us allocate gigabytes).
MAX_FRAME = MAX_FRAME_SIZE
#: The top bit of a frame's length: its message goes on in the next frame.
MORE = 1 << 31
#: Refuse a message (joined from its frames) larger than this: SQLite's own largest row
#: (SQLITE_MAX_LENGTH, 1e9 bytes by default) and its encoding fit well within it.
MAX_MESSAGE = 2 << 30
#: Frames the leader sends are at most this long by default (`--frame-size`).
FRAME_SIZE = DEFAULT_FRAME_SIZE
END = "end"
#: Version of the batch header.
FORMAT = 1

# HTTP names shared by the nodes' servers and clients.
HEAD_HEADER = "X-Sqlrepl-Head"
EPOCH_HEADER = "X-Sqlrepl-Epoch"
SEQ_HEADER = "X-Sqlrepl-Seq"
SHA256_HEADER = "X-Sqlrepl-Sha256"
#: A snapshot answer: the image's id (to resume it), its size, where this answer starts,
#: the chunk size, and the image's meta (JSON: cluster, role, node, epoch).
IMAGE_HEADER = "X-Sqlrepl-Image"
SIZE_HEADER = "X-Sqlrepl-Image-Size"
OFFSET_HEADER = "X-Sqlrepl-Offset"
CHUNK_HEADER = "X-Sqlrepl-Chunk"
META_HEADER = "X-Sqlrepl-Meta"
#: On a 410 answer: the follower's position is not on this leader's timeline.
FORK_HEADER = "X-Sqlrepl-Fork"
#: With every batch answer: the members the leader knows (JSON list of URLs, itself first).
MEMBERS_HEADER = "X-Sqlrepl-Members"
#: The cluster's settings (`core.cluster`), carried to followers with every batch answer.
SETTINGS_HEADER = "X-Sqlrepl-Settings"
BATCH_TYPE = "application/x-sqlrepl-batch"
SNAPSHOT_TYPE = "application/vnd.sqlite3"


@dataclass(frozen=True)
class TableShape:
    """How a batch's rows of one table look: key columns first, then the other columns;
    `replace`: images go in by INSERT OR REPLACE (no secondary UNIQUE index); `fts5`: the
    FTS5 table whose index this table holds (a shadow table), else None."""

    name: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    replace: bool
    fts5: str | None = None

    def to_wire(self) -> list[Any]:
        return [self.name, list(self.keys), list(self.columns), self.replace, self.fts5]

    @classmethod
    def from_wire(cls, value: Any) -> TableShape:
        name, keys, columns, replace, *rest = value  # (an older leader sends no `fts5`)
        fts5 = str(rest[0]) if rest and rest[0] is not None else None
        return cls(str(name), tuple(keys), tuple(columns), bool(replace), fts5)


@dataclass(frozen=True)
class Header:
    """The first frame of a batch: which state it moves a follower from and to, and what
    it carries (schema, table shapes, AUTOINCREMENT counters, epoch history)."""

    cluster: str
    epoch: int
    after: int
    head: int
    #: [type, name, tbl_name, sql] of every user object, or None when it did not change.
    schema: list[list[str]] | None
    tables: dict[int, TableShape]
    sequences: list[list[Any]] | None
    #: The leader's epoch history (`core/roles`), or None when it did not send it.
    history: list[dict[str, Any]] | None

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": FORMAT,
            "cluster": self.cluster,
            "epoch": self.epoch,
            "after": self.after,
            "head": self.head,
            "schema": self.schema,
            "tables": {tid: shape.to_wire() for tid, shape in self.tables.items()},
            "sequences": self.sequences,
            "history": self.history,
        }

    @classmethod
    def from_wire(cls, value: Any) -> Header:
        if not isinstance(value, dict) or value.get("v") != FORMAT:
            raise ProtocolError(f"batch does not start with a version {FORMAT} header")
        try:
            return cls(
                cluster=str(value["cluster"]),
                epoch=int(value["epoch"]),
                after=int(value["after"]),
                head=int(value["head"]),
                schema=value["schema"],
                tables={int(t): TableShape.from_wire(d) for t, d in value["tables"].items()},
                sequences=value.get("sequences"),
                history=_history(value.get("history")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed batch header: {exc!r}") from exc


def _history(value: Any) -> list[dict[str, Any]] | None:
    """The epoch history as a list (an older leader sends it as JSON text)."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        value = json.loads(value)
    if not isinstance(value, list | tuple):
        raise ProtocolError("malformed batch header: history is not a list")
    return [dict(entry) for entry in value]


def encode(obj: Any) -> bytes:
    """One message's payload."""
    return msgpack.packb(obj, use_bin_type=True)


def pack(obj: Any) -> bytes:
    payload = encode(obj)
    return FRAME_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class FrameWriter:
    """Writes messages to `write` in frames of at most `limit` bytes, then an end frame
    that counts them."""

    def __init__(self, write: Callable[[bytes], Any], limit: int = FRAME_SIZE) -> None:
        if not 0 < limit <= MAX_FRAME:
            raise ValueError(f"a frame size must be between 1 and {MAX_FRAME} bytes")
        self._write = write
        self.limit = limit
        self.frames = 0

    def send(self, obj: Any) -> None:
        self.send_encoded(encode(obj))

    def send_encoded(self, payload: bytes) -> None:
        """Send a message already encoded (`encode`), cut into frames if it is too long."""
        view = memoryview(payload)
        while len(view) > self.limit:
            piece, view = view[: self.limit], view[self.limit :]
            self._write(FRAME_HEAD.pack(len(piece) | MORE, zlib.crc32(piece)) + piece)
            self.frames += 1
        self._write(FRAME_HEAD.pack(len(view), zlib.crc32(view)) + view)
        self.frames += 1

    def end(self) -> None:
        self._write(pack([END, self.frames]))


class FrameReader:
    """Turns bytes, fed in any slicing, back into frames; checks lengths, CRCs and the end."""

    def __init__(self) -> None:
        self._buf = bytearray()
        #: The frames read so far of a message cut into several (MORE).
        self._message = bytearray()
        self.frames = 0
        self.ended = False

    def feed(self, data: bytes) -> Iterator[Any]:
        self._buf += data
        at = 0
        try:
            while len(self._buf) - at >= FRAME_HEAD.size:
                length, crc = FRAME_HEAD.unpack_from(self._buf, at)
                more = bool(length & MORE)
                length &= ~MORE
                if length > MAX_FRAME:
                    raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME} limit")
                start = at + FRAME_HEAD.size
                if len(self._buf) < start + length:
                    return
                at = start + length
                payload: bytes | bytearray = self._checked(memoryview(self._buf)[start:at], crc)
                if more or self._message:  # a piece of a message cut into several frames
                    if len(self._message) + len(payload) > MAX_MESSAGE:
                        raise ProtocolError(f"a batch message exceeds {MAX_MESSAGE} bytes")
                    self._message += payload
                    if more:
                        self.frames += 1  # (the last piece is counted with its message)
                        continue
                    payload, self._message = self._message, bytearray()
                yield self._decode(payload)
        finally:
            del self._buf[:at]

    def _checked(self, payload: memoryview, crc: int) -> bytes:
        try:
            if self.ended:
                raise ProtocolError("data after the end of the batch")
            if zlib.crc32(payload) != crc:
                raise ProtocolError("batch frame failed its CRC check (corrupt payload)")
            return bytes(payload)
        finally:
            payload.release()

    def _decode(self, payload: bytes | bytearray) -> Any:
        try:
            # Arrays decode as tuples: several times cheaper than lists for row images.
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=False)
        except Exception as exc:
            raise ProtocolError(f"batch frame is not valid msgpack: {exc}") from exc
        if isinstance(obj, tuple) and obj[:1] == (END,):
            if obj[1:] != (self.frames,):
                raise ProtocolError(f"batch ended after {self.frames} frames, expected {obj[1:]}")
            self.ended = True
            return obj
        self.frames += 1
        return obj

    def close(self) -> None:
        """Raise unless the stream ended cleanly."""
        if not self.ended or self._buf or self._message:
            raise ProtocolError("batch is truncated (no end frame)")
