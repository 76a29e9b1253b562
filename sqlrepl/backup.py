"""`sqlrepl snapshot` and `sqlrepl restore`: verified copies written atomically."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

import apsw

from .core import restore as restore_core
from .core import snapshot, tempfiles
from .core.db import connect, durable
from .core.positions import Position
from .errors import DatabaseError, StorageError
from .node.client import Client

Progress = snapshot.Progress


def is_url(source: str) -> bool:
    return re.match(r"^https?://", source) is not None


def target_path(source: str, dest: Path) -> Path:
    """DEST itself, or a timestamped file inside DEST when it is a directory."""
    if not dest.is_dir():
        return dest
    stem = (
        re.sub(r"[^A-Za-z0-9_.-]+", "_", source.split("://")[-1])
        if is_url(source)
        else Path(source).stem
    )
    return dest / f"{stem.strip('_')}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"


def save(
    source: str,
    dest: Path,
    *,
    token: str | None = None,
    keep: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write a snapshot of SOURCE (a path or node URL) to DEST; return what was written."""
    path = target_path(source, dest)
    if not path.parent.is_dir():
        raise DatabaseError(f"cannot write {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise DatabaseError(f"cannot write {path}: directory {path.parent} is not writable")
    tempfiles.remove_stale(path.parent)
    tmp = tempfiles.temp_path(path)
    try:
        if is_url(source):
            where = asyncio.run(_download(source, tmp, token, progress))
        else:
            where = _copy(Path(source), tmp)
        snapshot.verify(tmp)
        durable(tmp)
        os.replace(tmp, path)
        durable(path)
    except (OSError, apsw.Error) as exc:  # a full disk, an I/O error: one line, nothing left
        why = getattr(exc, "strerror", None) or str(exc)
        raise StorageError(f"cannot write {path}: {why}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    pruned = prune(path, keep) if keep and dest.is_dir() else []
    return {
        "path": str(path),
        "epoch": where.epoch,
        "seq": where.seq,
        "bytes": path.stat().st_size,
        "pruned": [str(p) for p in pruned],
    }


async def _download(url: str, tmp: Path, token: str | None, progress: Progress | None) -> Position:
    async with Client(url, token) as client:
        return await client.download_snapshot(tmp, progress=progress)


def _copy(source: Path, tmp: Path) -> Position:
    conn = connect(source, readonly=True)
    try:
        return snapshot.take(conn, tmp, time.time())
    finally:
        conn.close()


def prune(latest: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` snapshots that share `latest`'s name stem."""
    stem = latest.name.rsplit("-", 1)[0]
    pattern = re.compile(re.escape(stem) + r"-\d{8}T\d{6}Z\.db$")
    ours = sorted(p for p in latest.parent.iterdir() if pattern.match(p.name))
    old = ours[:-keep] if keep > 0 else []
    for p in old:
        p.unlink()
    return old


def restore(
    source: Path, dest: Path, *, as_leader: bool = False, epoch: int | None = None
) -> dict[str, Any]:
    """Make the writable database DEST from the snapshot or follower copy SOURCE: a plain
    file by default (a leader started on it founds a new cluster), or with `as_leader` the
    leader of the old cluster on a new epoch. DEST must not exist; it appears whole or not
    at all."""
    if dest.exists():
        raise DatabaseError(f"{dest} already exists; refusing to overwrite it")
    conn = connect(source, readonly=True)
    try:
        what = restore_core.describe(conn)
    finally:
        conn.close()
    tempfiles.remove_stale(dest.parent)
    tmp = tempfiles.temp_path(dest)
    try:
        conn = connect(source, readonly=True)
        try:
            copy = connect(tmp, create=True)
            with copy.backup("main", conn, "main") as step:
                step.step(-1)
            copy.close()
        finally:
            conn.close()
        snapshot.verify(tmp)
        now = time.time()
        if as_leader:
            where = restore_core.make_leader(tmp, epoch, f"restored from {source}", now)
            what.update(epoch=where.epoch, seq=where.seq)
        else:
            copy = connect(tmp)
            try:
                restore_core.make_plain(copy)
            finally:
                copy.close()
        durable(tmp)
        os.replace(tmp, dest)
        durable(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(dest), "as": "leader" if as_leader else "new cluster", "source": what}
