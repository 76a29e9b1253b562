"""A deposed leader rejoining: where it stands, and the rollback file of what diverged."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import apsw

from . import capture, roles
from .db import Position, read_meta


def position(conn: apsw.Connection) -> Position:
    """A leader file's position: its epoch and its log head."""
    return Position(int(read_meta(conn)["epoch"]), capture.head(conn))


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__}")


def save_divergence(conn: apsw.Connection, history: list[dict[str, Any]], mine: Position) -> Path:
    """Write every change made after the fork point to a JSON-lines rollback file next to the
    database; return its path. Nothing is merged or dropped: the operator decides."""
    fork = roles.start_of_next_epoch(history, mine.epoch)
    assert fork is not None
    db = Path(conn.filename)
    path = db.with_name(f"{db.name}.rollback-e{mine.epoch}-s{fork}-{int(time.time())}.jsonl")
    with open(path, "w") as out:
        for change in roles.divergent_changes(conn, fork):
            out.write(json.dumps(change, default=_json_value) + "\n")
    return path
