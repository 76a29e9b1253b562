"""In-process leader → follower replication over the real wire format (no sockets)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from sqlrepl.core import apply, batch, capture, schema, snapshot
from sqlrepl.core.db import connect
from sqlrepl.core.positions import Position, follower_position
from sqlrepl.core.wire import FRAME_SIZE, FrameWriter


class Replica:
    """A leader file and a follower file, synced on demand."""

    def __init__(self, tmp: Path, leader: Path | None = None, frame_size: int = FRAME_SIZE) -> None:
        self.frame_size = frame_size
        self.leader_path = leader or tmp / "leader.db"
        self.follower_path = tmp / "follower.db"
        self.leader = connect(self.leader_path, create=True)
        capture.install(self.leader)
        snap = tmp / f"snap-{uuid.uuid4().hex}.db"
        snapshot.take(self.leader, snap, 0.0)
        snapshot.make_follower(snap, "http://leader.test", "node-1")
        snapshot.place(snap, self.follower_path)
        self.follower = apply.applier_connection(connect(self.follower_path))
        self.tables = batch.TableCache()

    def batch_bytes(self) -> bytes:
        capture.sync_capture(self.leader)
        out = io.BytesIO()
        after = follower_position(self.follower).seq
        fts5 = schema.fts5_fingerprints(self.follower)
        batch.build(self.leader, after, FrameWriter(out.write, self.frame_size), self.tables, fts5)
        return out.getvalue()

    def sync(self) -> Position:
        return apply.apply_stream(self.follower, self.batch_bytes())

    def close(self) -> None:
        self.leader.close()
        self.follower.close()
