"""Transactions of any size: frames bounded in bytes, large values in pieces (issue 24).

A small frame size makes every path of a multi-GiB transaction run here at KiB scale."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import apsw
import pytest

from sqlrepl.core import apply, wire
from sqlrepl.errors import ProtocolError

from ..helpers.apps import write
from ..helpers.dump import dump
from ..helpers.replica import Replica

FRAME = 4096


@pytest.fixture
def small(tmp_path: Path):
    r = Replica(tmp_path, frame_size=FRAME)
    yield r
    r.close()


def frames(stream: bytes) -> list[tuple[int, bool]]:
    """(length, continued) of every frame of a batch stream."""
    out, at = [], 0
    while at < len(stream):
        length, _crc = wire.FRAME_HEAD.unpack_from(stream, at)
        out.append((length & ~wire.MORE, bool(length & wire.MORE)))
        at += wire.FRAME_HEAD.size + (length & ~wire.MORE)
    return out


def kinds(stream: bytes) -> list[str]:
    reader = wire.FrameReader()
    return [f[0] if isinstance(f, tuple) else "header" for f in reader.feed(stream)]


SCHEMA = (
    "CREATE TABLE files(id INTEGER PRIMARY KEY, name TEXT, body BLOB, note TEXT)",
    "CREATE TABLE docs(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID",
    "CREATE TABLE tagged(id INTEGER PRIMARY KEY, tag BLOB)",
    "CREATE INDEX tagged_tag ON tagged(tag)",
    "CREATE TABLE checked(id INTEGER PRIMARY KEY, v BLOB CHECK (length(v) > 0))",
    "CREATE TABLE derived(id INTEGER PRIMARY KEY, v BLOB, n INT AS (length(v)) STORED)",
)


def big(n: int, seed: int = 0) -> bytes:
    return (bytes([seed % 251]) + os.urandom(31)) * (n // 32) + b"x" * (n % 32)


def test_values_many_frames_long_replicate_exactly_in_frames_of_bounded_size(
    small: Replica,
) -> None:
    """Values many times the frame size, in every kind of column, reach the follower
    byte-exact; no frame on the wire is longer than the frame size."""
    write(small, *SCHEMA)
    small.sync()
    size = 25 * FRAME + 17
    app = apsw.Connection(str(small.leader_path))
    with app:
        app.execute("INSERT INTO files VALUES(1, 'a', ?, ?)", (big(size, 1), "é" * (size // 2)))
        app.execute("INSERT INTO files VALUES(2, 'small', x'00', 'n')")
        app.execute("INSERT INTO docs VALUES(?, ?)", ("k" * (3 * FRAME), big(size, 2)))
        app.execute("INSERT INTO tagged VALUES(1, ?)", (big(size, 3),))
        app.execute("INSERT INTO checked VALUES(1, ?)", (big(size, 4),))
        app.execute("INSERT INTO derived(id, v) VALUES(1, ?)", (big(size, 5),))
    app.close()
    stream = small.batch_bytes()
    assert max(length for length, _ in frames(stream)) <= FRAME
    assert any(more for _, more in frames(stream)), "a row larger than a frame was cut"
    assert "fill" in kinds(stream), "the rowid table's large values went in pieces"
    apply.apply_stream(small.follower, stream)
    assert dump(small.leader_path) == dump(small.follower_path)


def test_one_transaction_of_many_frames_and_updates_and_deletes_of_large_rows(
    small: Replica,
) -> None:
    """A transaction of many frames (rows of all sizes), then updates that grow and shrink
    large values and deletes of rows with large keys: equal after each batch."""
    write(small, *SCHEMA)
    small.sync()
    app = apsw.Connection(str(small.leader_path))
    with app:
        for i in range(300):
            app.execute(
                "INSERT INTO files VALUES(?, ?, ?, ?)",
                (i, f"f{i}", big((i * 977) % (5 * FRAME), i), "t" * (i % 7)),
            )
            app.execute("INSERT INTO docs VALUES(?, ?)", (f"{i:05}" * (i % 900), big(i * 13, i)))
    frames_sent = frames(small.batch_bytes())
    assert len(frames_sent) > 50 and max(n for n, _ in frames_sent) <= FRAME
    small.sync()
    assert dump(small.leader_path) == dump(small.follower_path)
    with app:
        app.execute("UPDATE files SET body = ? WHERE id % 3 = 0", (big(9 * FRAME, 7),))
        app.execute("UPDATE files SET body = x'01' WHERE id % 3 = 1")
        app.execute("UPDATE files SET note = ? WHERE id = 5", ("ü" * (4 * FRAME),))
        app.execute("DELETE FROM docs WHERE length(k) > ?", (2 * FRAME,))
        app.execute("DELETE FROM files WHERE id % 5 = 0")
    app.close()
    small.sync()
    assert dump(small.leader_path) == dump(small.follower_path)


def test_a_batch_cut_inside_a_large_value_applies_nothing(small: Replica) -> None:
    """A stream that stops between two pieces of a large value is refused whole."""
    write(small, SCHEMA[0])
    small.sync()
    before = dump(small.follower_path)
    write(small, "INSERT INTO files VALUES(1, 'a', ?, NULL)", params=(big(20 * FRAME),))
    stream = small.batch_bytes()
    applier = apply.Applier(small.follower)
    applier.feed(stream[: len(stream) // 2])
    with pytest.raises(ProtocolError):
        applier.finish()
    assert dump(small.follower_path) == before


def test_a_message_beyond_the_joined_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_MESSAGE", 10_000)
    out = bytearray()
    writer = wire.FrameWriter(out.extend, 1000)
    writer.send([b"x" * 20_000])
    with pytest.raises(ProtocolError, match="exceeds"):
        list(wire.FrameReader().feed(bytes(out)))


def test_frames_joined_keep_their_count_and_checks() -> None:
    out = bytearray()
    writer = wire.FrameWriter(out.extend, 100)
    writer.send({"v": 1})
    writer.send(["put", 1, [[b"y" * 1000]]])
    writer.end()
    got = list(wire.FrameReader().feed(bytes(out)))
    assert got[1] == ("put", 1, ((b"y" * 1000,),))
    corrupt = bytearray(out)
    corrupt[wire.FRAME_HEAD.size * 3 + 40] ^= 1
    with pytest.raises(ProtocolError, match="CRC"):
        list(wire.FrameReader().feed(bytes(corrupt)))
    assert struct.unpack_from(">I", out, 0)[0] < 100
