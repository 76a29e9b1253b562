"""`sqlrepl snapshot` and `sqlrepl restore`: verified copies written atomically."""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from .config import ClientTLS
from .core import image, snapshot, tempfiles
from .core import restore as restore_core
from .core.db import connect, durable
from .errors import DatabaseError, Refused, StorageError
from .node import transfer
from .node.client import Client
from .node.freshness import file_lag
from .node.snapshots import pin

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
    tls: ClientTLS | None = None,
    keep: int | None = None,
    keep_days: float | None = None,
    max_lag: float | None = None,
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
        with _terminated_cleanly() as terminated:
            if is_url(source):
                asyncio.run(_download(source, tmp, token, tls, max_lag, progress, terminated))
            else:
                if max_lag is not None:
                    _check_fresh(Path(source), max_lag)
                pinned = pin(Path(source))
                try:
                    image.copy(pinned, tmp)
                finally:
                    pinned.close()
            where = snapshot.stamp(tmp, time.time(), source)
            snapshot.verify(tmp)
            durable(tmp)
            os.replace(tmp, path)
            durable(path)
    except (OSError, apsw.Error) as exc:  # a full disk, an I/O error: one line, nothing left
        why = getattr(exc, "strerror", None) or str(exc)
        raise StorageError(f"cannot write {path}: {why}") from exc
    finally:
        for leftover in transfer.leftovers(tmp):
            leftover.unlink(missing_ok=True)
    pruned = prune(path, keep, keep_days) if (keep or keep_days) and dest.is_dir() else []
    return {
        "path": str(path),
        "epoch": where.epoch,
        "seq": where.seq,
        "bytes": path.stat().st_size,
        "pruned": [str(p) for p in pruned],
    }


class _Termination:
    """SIGTERM (cron's `timeout`, systemd) ends the snapshot through its cleanup, like ^C.

    While a transfer's event loop runs, the signal cancels its task from inside the loop:
    an exception raised at whatever instruction the signal lands on could strand a future
    the cleanup then waits for. Elsewhere (a local copy) it raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[Any] | None = None
        self.received = False

    def attach(self) -> None:
        """The running task is the transfer to cancel (called from inside it)."""
        self.loop, self.task = asyncio.get_running_loop(), asyncio.current_task()

    def detach(self) -> None:
        self.loop = self.task = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        loop, task = self.loop, self.task
        if loop is None or task is None or loop.is_closed():
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(task.cancel)


@contextlib.contextmanager
def _terminated_cleanly() -> Iterator[_Termination | None]:
    terminated = _Termination()
    try:
        previous = signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield None
        return
    try:
        yield terminated
    except asyncio.CancelledError:
        if not terminated.received:
            raise
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _download(
    url: str,
    tmp: Path,
    token: str | None,
    tls: ClientTLS | None,
    max_lag: float | None,
    progress: Progress | None,
    terminated: _Termination | None = None,
) -> None:
    if terminated is not None:
        terminated.attach()
    try:
        params: dict[str, Any] = {}
        async with Client(url, token, tls) as client:
            if max_lag is not None and (await client.status()).get("role") == "follower":
                params["max_lag"] = max_lag
            await transfer.download(client, tmp, params, progress)
    finally:
        if terminated is not None:
            terminated.detach()


def _check_fresh(path: Path, max_lag: float) -> None:
    """A follower's file snapshot only while its daemon vouches it is within `max_lag`."""
    lag = file_lag(path)
    if lag is None or lag > max_lag:
        said = "no freshness proof" if lag is None else f"{lag:.1f} s behind"
        raise Refused(f"{path} has {said} (max lag {max_lag:g} s): refusing a stale snapshot")


def _described(path: Path) -> dict[str, Any]:
    with contextlib.suppress(DatabaseError, apsw.Error):
        conn = connect(path, readonly=True)
        try:
            return restore_core.describe(conn)
        finally:
            conn.close()
    return {}


def prune(latest: Path, keep: int | None, keep_days: float | None = None) -> list[Path]:
    """Delete the snapshots of `latest`'s source and cluster that no rule keeps: the
    newest `keep`, and those younger than `keep_days` (either rule keeps a snapshot; the
    newest is always kept)."""
    stem = latest.name.rsplit("-", 1)[0]
    pattern = re.compile(re.escape(stem) + r"-(\d{8}T\d{6}Z)\.db$")
    cluster = _described(latest).get("cluster")
    ours = sorted(
        p
        for p in latest.parent.iterdir()
        if pattern.match(p.name) and _described(p).get("cluster") == cluster
    )
    now = time.time()
    old = []
    for rank, p in enumerate(reversed(ours)):
        stamp = pattern.match(p.name)
        taken = calendar.timegm(time.strptime(stamp[1], "%Y%m%dT%H%M%SZ")) if stamp else now
        kept_by_count = keep is not None and rank < keep
        kept_by_age = keep_days is not None and now - taken < keep_days * 86400
        if rank > 0 and not kept_by_count and not kept_by_age:
            old.append(p)
    for p in old:
        p.unlink()
    return sorted(old)


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
