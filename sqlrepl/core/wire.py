"""The batch wire format: length-prefixed msgpack frames, each with its own CRC32.

    frame   := length:u32 crc32:u32 payload[length]     (big endian)
    stream  := header frame, data frames…, end frame

A stream that stops before its end frame, or any frame whose CRC does not match, is
rejected whole: the follower applies nothing from it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from .errors import ProtocolError

FRAME_HEAD = struct.Struct(">II")
#: Refuse frames larger than this (a corrupt length must not make us allocate gigabytes).
MAX_FRAME = 64 << 20
END = "end"


def pack(obj: Any) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return FRAME_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class FrameWriter:
    """Writes frames to `write`, then an end frame that counts them."""

    def __init__(self, write: Callable[[bytes], Any]) -> None:
        self._write = write
        self.frames = 0

    def send(self, obj: Any) -> None:
        self._write(pack(obj))
        self.frames += 1

    def end(self) -> None:
        self._write(pack([END, self.frames]))


class FrameReader:
    """Turns bytes, fed in any slicing, back into frames; checks lengths, CRCs and the end."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.ended = False

    def feed(self, data: bytes) -> Iterator[Any]:
        self._buf += data
        at = 0
        try:
            while len(self._buf) - at >= FRAME_HEAD.size:
                length, crc = FRAME_HEAD.unpack_from(self._buf, at)
                if length > MAX_FRAME:
                    raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME} limit")
                start = at + FRAME_HEAD.size
                if len(self._buf) < start + length:
                    return
                at = start + length
                yield self._decode(bytes(self._buf[start:at]), crc)
        finally:
            del self._buf[:at]

    def _decode(self, payload: bytes, crc: int) -> Any:
        if self.ended:
            raise ProtocolError("data after the end of the batch")
        if zlib.crc32(payload) != crc:
            raise ProtocolError("batch frame failed its CRC check (corrupt payload)")
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
        if not self.ended or self._buf:
            raise ProtocolError("batch is truncated (no end frame)")
