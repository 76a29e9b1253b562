"""Continuous archive and point-in-time restore (issue 15).

A workload of transfers between accounts (each logged in a ledger), deletes, inserts and
schema changes runs on the leader while `sqlrepl archive` keeps it. At 20 random moments
the workload pauses once the archive holds the leader's token, and the leader's content
is captured as the reference, with its token and the time. The archive's daemon is
killed with -9 halfway. Each reference is then restored, half by token and half by time,
and must equal the leader's state at that moment, bank total included. A corrupted and a
missing segment are caught by `archive verify` and by `restore`, which refuses to go
past the damage and names the last position before it.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import sqlrepl as api

from ..helpers.bank import ACCOUNTS, TOTAL, bank_db
from ..helpers.daemons import Cluster, holds, sqlrepl
from ..helpers.dump import dump, schema

POINTS = 20


class Workload:
    """The app: transfers, deletes, inserts and, now and then, a schema change."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db)
        self.changes = 0

    def step(self) -> None:
        op = random.random()
        with self.conn:
            if op < 0.6:
                a, b = random.sample(range(ACCOUNTS), 2)
                self.conn.execute("UPDATE acct SET bal = bal - 1 WHERE id = ?", (a,))
                self.conn.execute("UPDATE acct SET bal = bal + 1 WHERE id = ?", (b,))
                self.conn.execute("INSERT INTO ledger(a, b) VALUES(?, ?)", (a, b))
            elif op < 0.75:
                self.conn.execute(
                    "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger ORDER BY random() "
                    "LIMIT 2)"
                )
            elif op < 0.9:
                self.conn.execute("DELETE FROM filler WHERE id = (SELECT max(id) FROM filler)")
            elif op < 0.95:
                self.changes += 1
                self.conn.execute(f"ALTER TABLE ledger ADD COLUMN c{self.changes} DEFAULT 7")
            else:
                self.changes += 1
                self.conn.execute(f"CREATE TABLE notes{self.changes}(id INTEGER PRIMARY KEY, t)")
                self.conn.execute(f"INSERT INTO notes{self.changes}(t) VALUES('n')")

    def token(self) -> str:
        return api.token(self.conn)

    def close(self) -> None:
        self.conn.close()


def same_bank(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT sum(bal) FROM acct").fetchone()[0] == TOTAL
    finally:
        conn.close()


def run_archive(
    tmp_path: Path,
    cluster: Cluster,
    points: int,
    every: float = 2,
    kill: bool = True,
    segments: int = 0,
) -> tuple[Path, list[Any]]:
    """Run the workload with an archive (a snapshot `every` seconds, its daemon killed
    with -9 halfway if `kill`) for `points` references, and on until it sealed at least
    `segments` segments; return its directory and the references."""
    db = bank_db(tmp_path / "bank.db", 2)
    leader = cluster.leader(db)
    directory = tmp_path / "archive"
    archive = cluster.archive(
        directory, leader, "--snapshot-interval", str(every), "--segment-interval", "0.5"
    )
    app = Workload(db)
    refs = []
    try:
        i = 0
        while i < points or len(sealed(directory)) < segments:
            assert i < 10_000, "the archive never sealed its segments"
            for _ in range(random.randint(2, 12)):
                app.step()
            token = app.token()
            holds(archive, token)
            moment = time.time()
            refs.append((token, moment, dump(db), schema(db)))
            if kill and i == points // 2:
                archive.kill9()  # no chance to seal or record anything more
                archive.start()
            i += 1
    finally:
        app.close()
        archive.stop()
    return directory, refs


def test_point_in_time_restore_equals_the_leader_at_20_positions(
    tmp_path: Path, cluster: Cluster
) -> None:
    directory, refs = run_archive(tmp_path, cluster, POINTS)
    check = sqlrepl("archive", "verify", str(directory))
    assert check.returncode == 0, check.stdout + check.stderr
    for k, (token, moment, content, shape) in enumerate(refs):
        out = tmp_path / f"restored-{k}.db"
        at = token if k % 2 == 0 else f"@{moment}"
        result = sqlrepl("restore", str(directory), str(out), "--at", at, "--json")
        assert result.returncode == 0, (at, result.stderr)
        assert dump(out) == content, f"restore --at {at} differs from the leader at {token}"
        assert schema(out) == shape
        same_bank(out)
    newest = tmp_path / "newest.db"
    assert sqlrepl("restore", str(directory), str(newest)).returncode == 0
    assert dump(newest) == refs[-1][2]


def sealed(directory: Path) -> list[Path]:
    return sorted((directory / "segments").glob("*.seg"))


def test_damaged_or_missing_segments_are_caught(tmp_path: Path, cluster: Cluster) -> None:
    # One snapshot only (no periodic ones, no restart): every segment is needed.
    directory, refs = run_archive(tmp_path, cluster, 6, every=3600, kill=False, segments=4)
    last = refs[-1][0]
    segs = [p for p in sealed(directory) if p.stat().st_size > 0]
    assert len(segs) >= 3, segs
    victim = segs[len(segs) // 2]
    good = victim.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    check = sqlrepl("archive", "verify", str(directory))
    assert check.returncode == 1 and victim.name in check.stderr, check.stderr
    refused = sqlrepl("restore", str(directory), str(tmp_path / "past.db"), "--at", last)
    assert refused.returncode == 1, refused.stdout
    assert "refusing to restore past it" in refused.stderr, refused.stderr
    assert not (tmp_path / "past.db").exists()
    before = re.search(r"--at (\d+:\d+)", refused.stderr)
    assert before, refused.stderr
    stop = tmp_path / "stop.db"
    assert sqlrepl("restore", str(directory), str(stop), "--at", before[1]).returncode == 0
    same_bank(stop)
    victim.write_bytes(good)
    assert sqlrepl("archive", "verify", str(directory)).returncode == 0
    victim.unlink()
    check = sqlrepl("archive", "verify", str(directory))
    assert check.returncode == 1 and "missing" in check.stderr, check.stderr


@pytest.mark.parametrize("at", ["yesterday", "1:x", "2001-01-01T00:00:00Z"])
def test_restore_at_bad_or_unknown_points_fails_cleanly(
    tmp_path: Path, cluster: Cluster, at: str
) -> None:
    directory, _ = run_archive(tmp_path, cluster, 1)
    result = sqlrepl("restore", str(directory), str(tmp_path / "r.db"), "--at", at)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "r.db").exists()


def test_an_archive_is_never_promoted(tmp_path: Path, cluster: Cluster) -> None:
    """Not by `promote --force`, not by a switchover, not by a SIGTERM handover."""
    db = bank_db(tmp_path / "bank.db", 1)
    leader = cluster.leader(db)
    archive = cluster.archive(
        tmp_path / "archive", leader, "--snapshot-interval", "3600", "--segment-interval", "0.5"
    )
    forced = sqlrepl("promote", archive.url, "--force")
    assert forced.returncode == 1 and "never promoted" in forced.stderr, forced.stderr
    assert archive.status()["eligible"] is False
    for extra in ([], ["--force"]):
        moved = sqlrepl("switchover", "--to", archive.url, *extra)
        assert moved.returncode == 1, moved.stdout
        assert leader.role() == "leader"
    leader.stop()  # SIGTERM: no follower to hand over to, the leader just stops
    assert archive.role() == "follower"
    assert "no follower to hand over to" in leader.log()
