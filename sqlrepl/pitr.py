"""Point-in-time restore from an archive (`sqlrepl archive`), and checking one.

A restore point is any position the archive recorded: a snapshot's, or the end of a
batch (the leader's state at a commit; a batch is built in one read transaction). `--at`
takes a token (`E:S`, exactly such a position) or a time (the newest position the
archive had received by then). The newest snapshot of that chain at or before it is
copied, and the batches after it replayed in order. A damaged or missing segment stops a
restore that would need it: it names the last position before the damage.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from .core import restore as restore_core
from .core import segments, snapshot, tempfiles, tokens
from .core.apply import Applier, applier_connection
from .core.db import connect, durable
from .core.positions import Position
from .errors import ConfigError, DatabaseError
from .node import transfer


@dataclass
class Shot:
    path: Path
    chain: int
    position: Position
    taken_at: float


@dataclass
class Chain:
    id: int
    snapshots: list[Shot] = field(default_factory=list)
    #: (segment, record) of every intact record, in the order they were written.
    records: list[tuple[Path, segments.Record]] = field(default_factory=list)
    #: What is damaged or missing in this chain.
    problems: list[str] = field(default_factory=list)


def load(directory: Path, check_snapshots: bool = False) -> tuple[dict[int, Chain], list[str]]:
    """Every chain of the archive, and every problem found in it."""
    if not (directory / "segments").is_dir() or not (directory / "snapshots").is_dir():
        raise DatabaseError(f"{directory} is not a sqlrepl archive (no segments/ and snapshots/)")
    chains: dict[int, Chain] = {}
    problems: list[str] = []
    for p in sorted((directory / "snapshots").iterdir()):
        m = segments.SNAPSHOT_NAME.match(p.name)
        if not m:
            continue
        if check_snapshots and (why := _bad_snapshot(p)):
            problems.append(why)
            continue
        chain = chains.setdefault(int(m["chain"]), Chain(int(m["chain"])))
        at = Position(int(m["epoch"]), int(m["seq"]))
        chain.snapshots.append(Shot(p, chain.id, at, int(m["created"]) / 1e9))
    ends: dict[int, Position] = {}
    for p in sorted((directory / "segments").iterdir()):
        m = segments.NAME.match(p.name)
        if not m:
            continue
        chain = chains.setdefault(int(m["chain"]), Chain(int(m["chain"])))
        start = Position(int(m["epoch"]), int(m["seq"]))
        end = ends.get(chain.id)
        if end is not None and start.seq != end.seq:
            chain.problems.append(f"{p.name}: a segment is missing before it ({end} to {start})")
        scan = segments.scan(p)
        sealed = m["ext"] == segments.SEALED
        damage = _digest_problem(p, scan.sha256) if sealed else None
        records = scan.records
        if scan.problem and (sealed or scan.end < p.stat().st_size - segments.HEAD.size):
            chain.problems.append(scan.problem)
        elif damage:
            chain.problems.append(damage)
            records = []  # its records' heads cannot be trusted
        chain.records.extend((p, r) for r in records)
        ends[chain.id] = segments.sealed_end(p) or (records[-1].after if records else start)
    for chain in chains.values():
        problems.extend(chain.problems)
    return chains, problems


def _digest_problem(path: Path, digest: str | None = None) -> str | None:
    """A sealed segment or snapshot whose bytes no longer match the digest recorded
    beside it (`digest`: the file's, when the caller already read it whole)."""
    found = segments.sidecar(path)
    if found is None:
        return f"{path.name}: its checksum file is missing"
    if (digest or segments.sha256_of(path)) != found[0]:
        return f"{path.name}: fails its checksum (corrupt)"
    return None


def _bad_snapshot(path: Path) -> str | None:
    if why := _digest_problem(path):
        return why
    try:
        snapshot.verify(path)
    except DatabaseError as exc:
        return str(exc)
    return None


def resolve(chains: dict[int, Chain], at: str | None) -> tuple[Chain, Position]:
    """The chain and position `at` (a token, a time, or None: the newest) names."""
    if not chains:
        raise DatabaseError("the archive holds nothing yet")
    target = _token(at)
    if target is not None:
        for chain in sorted(chains.values(), key=lambda c: -c.id):
            points = [s.position for s in chain.snapshots] + [r.after for _, r in chain.records]
            if any(p.seq == target.seq and p.epoch <= target.epoch for p in points):
                return chain, target
        raise DatabaseError(
            f"{at} is not a restore point of this archive (it holds the state after every "
            "batch it received; `sqlrepl archive list` shows them)"
        )
    when = time.time() if at is None else parse_time(at)
    # The newest state reached by then: chains follow one another, positions only grow
    # within one. (Not the latest moment: a snapshot pinned before a batch arrived may be
    # stamped after it, and holds the older state.)
    best: tuple[int, Position, Chain] | None = None
    for chain in chains.values():
        moments = [(s.taken_at, s.position) for s in chain.snapshots]
        moments += [(r.received_at, r.after) for _, r in chain.records]
        for moment, where in moments:
            if moment <= when and (best is None or (chain.id, where) > best[:2]):
                best = (chain.id, where, chain)
    if best is None:
        raise DatabaseError(f"the archive holds nothing as old as {at}")
    return best[2], best[1]


def _token(at: str | None) -> Position | None:
    """`at` as a position token, or None if it is not one (a time, or nothing)."""
    try:
        return tokens.parse(at) if at is not None else None
    except ConfigError:
        return None


def parse_time(value: str) -> float:
    """An ISO 8601 time (local time if it names no zone) or `@` and Unix seconds."""
    if value.startswith("@"):
        with contextlib.suppress(ValueError):
            return float(value[1:])
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--at {value!r} is neither a token (E:S) nor a time (2026-11-28T12:00:00Z, @UNIX)"
        ) from None
    return moment.timestamp()


def plan(chain: Chain, target: Position) -> tuple[Shot, list[tuple[Path, segments.Record]]]:
    """The snapshot to start from and the records to replay to reach `target`."""
    bases = [s for s in chain.snapshots if s.position.seq <= target.seq]
    if not bases:
        raise DatabaseError(f"no snapshot in the archive is as old as {target}")
    base = max(bases, key=lambda s: (s.position.seq, s.taken_at))
    at, todo = base.position, []
    for path, record in chain.records:
        if at.seq >= target.seq:
            break
        if record.after.seq <= at.seq:
            continue
        if not segments.follows(record, at):
            break
        todo.append((path, record))
        at = record.after
    if at.seq == target.seq:
        return base, todo
    if at.seq > target.seq:
        raise DatabaseError(f"{tokens.format_token(target)} is inside a batch: not a restore point")
    if chain.problems:
        raise DatabaseError(
            f"{chain.problems[0]}: refusing to restore past it; the last position before "
            f"the damage is {tokens.format_token(at)} (pass --at {tokens.format_token(at)})"
        )
    raise DatabaseError(
        f"the archive does not reach {tokens.format_token(target)} (it ends at {at})"
    )


def restore(
    directory: Path,
    dest: Path,
    at: str | None,
    as_leader: bool = False,
    epoch: int | None = None,
) -> dict[str, Any]:
    """Rebuild DEST as the leader had it at `at` (see the module's doc)."""
    if dest.exists():
        raise DatabaseError(f"{dest} already exists; refusing to overwrite it")
    chains, _ = load(directory)
    chain, target = resolve(chains, at)
    base, todo = plan(chain, target)
    tempfiles.remove_stale(dest.parent)
    tmp = tempfiles.temp_path(dest)
    try:
        shutil.copyfile(base.path, tmp)
        snapshot.make_follower(tmp, "", "")
        conn = applier_connection(connect(tmp))
        try:
            for path, record in todo:
                _replay(conn, path, record)
        finally:
            conn.close()
        reached = Position(max(target.epoch, base.position.epoch), target.seq)
        if as_leader:
            reached = restore_core.make_leader(
                tmp, epoch, f"restored from {directory}", time.time()
            )
        else:
            with contextlib.closing(connect(tmp)) as copy:
                restore_core.make_plain(copy)
        snapshot.verify(tmp)
        durable(tmp)
        os.replace(tmp, dest)
        durable(dest)
    finally:
        transfer.discard(tmp)
    return {
        "path": str(dest),
        "as": "leader" if as_leader else "new cluster",
        "at": tokens.format_token(target),
        "epoch": reached.epoch,
        "seq": reached.seq,
        "snapshot": base.path.name,
        "batches_replayed": len(todo),
    }


def _replay(conn: apsw.Connection, path: Path, record: segments.Record) -> None:
    """Apply one recorded batch block by block: nothing of it is kept unless all of it
    passes its checksum (a batch may be larger than memory)."""
    applier = Applier(conn)
    try:
        for block in segments.batch_blocks(path, record):
            applier.feed(block)
    except BaseException:
        applier.abort()
        raise
    applier.finish()


def points(directory: Path) -> list[dict[str, Any]]:
    """Every restore point of the archive, oldest first."""
    chains, _ = load(directory)
    out = []
    for chain in sorted(chains.values(), key=lambda c: c.id):
        for s in chain.snapshots:
            out.append(
                {"token": tokens.format_token(s.position), "at": s.taken_at, "kind": "snapshot"}
            )
        for _, r in chain.records:
            out.append(
                {"token": tokens.format_token(r.after), "at": r.received_at, "kind": "batch"}
            )
    return sorted(out, key=lambda p: p["at"])


def verify(directory: Path) -> dict[str, Any]:
    """Check every snapshot and segment of the archive; list what is wrong."""
    chains, problems = load(directory, check_snapshots=True)
    for chain in chains.values():
        if not chain.snapshots and chain.records:
            problems.append(f"chain {chain.id}: no snapshot to start from")
    return {
        "ok": not problems,
        "problems": problems,
        "chains": len(chains),
        "snapshots": sum(len(c.snapshots) for c in chains.values()),
        "batches": sum(len(c.records) for c in chains.values()),
    }
