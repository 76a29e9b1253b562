"""Snapshots at disk speed, resumable, and cron-grade (issue 15).

Under a live bank (transfers between accounts, each also logged in a ledger, with the
stdlib driver's default settings), the follower's bootstrap is cut, its daemon killed
with -9 and the leader killed while serving: the follower's file never appears torn or
mixed, the download resumes the same image when it can, and the result equals the
leader. `sqlrepl snapshot` is killed by SIGTERM, pruned by count and age, and refuses
a stale follower.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..helpers.bank import Bank, Readers, bank_db, consistent
from ..helpers.daemons import Background, Cluster, Daemon, free_port, sqlrepl, wait_until
from ..helpers.dump import dump
from ..helpers.proxy import Proxy

ACCOUNTS, TOTAL = 10, 1000
#: A link's rate that holds a transfer nearly still while a test reads its progress (at
#: 6 MB/s the rest of an image may arrive before a slow machine has started `status`).
CRAWL = 20e3


def download_state(db: Path) -> dict | None:
    try:
        return json.loads(Path(f"{db}.sqlrepl-download.json").read_text())
    except (OSError, ValueError):
        return None


def downloaded(db: Path) -> int:
    """Bytes of the follower's snapshot download written so far."""
    partial = Path(f"{db}.sqlrepl-download")
    return partial.stat().st_size if partial.exists() else 0


def checkpoints_whole(db: Path) -> bool:
    """Does a checkpoint of `db`'s WAL go all the way (no image pinned)?"""
    conn = sqlite3.connect(db)
    try:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return bool(busy == 0 and frames == done)
    finally:
        conn.close()


def caught_up(leader_db: Path, follower: Daemon) -> None:
    Cluster.wait_caught_up(leader_db, follower, deadline=120)


def test_bootstrap_resumes_after_kill9_and_cuts_and_equals_the_leader(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A follower's first snapshot is cut twice and its daemon killed with -9 twice at
    random points, while the bank writes on: its file never exists torn, the download
    resumes the same image, and the follower ends equal to the leader."""
    db = bank_db(tmp_path / "bank.db", 40)
    replica = tmp_path / "replica.db"
    size = db.stat().st_size
    port = free_port()
    with Proxy(port) as link:
        # The leader is known by the link's address only: the follower cannot go around it.
        cluster.leader(db, "--advertise", link.url, port=port)
        with Bank(db) as bank:
            link.throttle(6e6)  # about 7 s for the whole image
            follower = cluster.follower(replica, link.url, ready=False)
            for fault in ("kill", "cut", "kill", "cut"):
                at = downloaded(replica) + random.uniform(0.1, 0.2) * size
                wait_until(lambda at=at: downloaded(replica) >= at, "the download", 60)
                link.throttle(CRAWL)  # the download holds (nearly) still while status is read
                shown = follower.status()["snapshot"]  # progress, in status while it runs
                assert shown and 0 < shown["done"] <= shown["total"], shown
                table = sqlrepl("status", follower.url).stdout
                assert "bootstrapping" in table and "%" in table, table
                link.throttle(6e6)
                if fault == "kill":
                    follower.kill9()
                else:
                    link.cut()
                    link.heal()
                assert not replica.exists(), "a follower's file appears only when whole"
                if fault == "kill":
                    follower.start(ready=False)
            link.throttle(None)
            follower.wait_ready()
        caught_up(db, follower)
    assert not bank.errors, bank.errors[:3]
    assert bank.committed > 0
    assert dump(db) == dump(replica)
    consistent(replica)
    log = follower.log()
    assert log.count("resumed at byte") >= 1, log
    # No image stays pinned (past a short grace): the leader's WAL checkpoints whole again.
    wait_until(lambda: checkpoints_whole(db), "the image to be unpinned", 20)


def test_leader_killed_while_serving_starts_the_transfer_over(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The leader dies with -9 mid-transfer and comes back with the same command: the
    follower cannot resume an image that is gone, so it starts a new one from byte 0,
    and ends equal to the leader (never a file mixed from two images)."""
    db = bank_db(tmp_path / "bank.db", 24)
    replica = tmp_path / "replica.db"
    size = db.stat().st_size
    port = free_port()
    with Proxy(port) as link:
        leader = cluster.leader(db, "--advertise", link.url, port=port)
        with Bank(db) as bank:
            link.throttle(6e6)
            follower = cluster.follower(replica, link.url, ready=False)
            wait_until(lambda: downloaded(replica) > size * 0.4, "half the download", 60)
            image = (download_state(replica) or {}).get("image")
            leader.kill9()
            assert not replica.exists()
            leader.start()
            wait_until(
                lambda: (download_state(replica) or {}).get("image") not in (None, image),
                "a new image",
                60,
            )
            link.throttle(None)
            follower.wait_ready()
        caught_up(db, follower)
    assert not bank.errors, bank.errors[:3]
    assert dump(db) == dump(replica)
    consistent(replica)


def test_live_rebootstrap_keeps_readers_working(tmp_path: Path, cluster: Cluster) -> None:
    """A follower far behind a short log re-bootstraps while apps read it: every read
    sees a whole bank (old or new), none fails for long, and it ends equal."""
    db = bank_db(tmp_path / "bank.db", 8)
    leader = cluster.leader(db, "--log-limit", "5")
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    caught_up(db, follower)
    follower.stop()
    with Bank(db) as bank:
        wait_until(lambda: bank.committed > 50, "transfers past the log")
    with Readers([replica]) as readers:
        follower.start()
        caught_up(db, follower)
        reads = readers.reads
        wait_until(lambda: readers.reads > reads + 5, "reads after the re-bootstrap")
    assert "re-bootstrapping" in follower.log()
    assert readers.torn == [], readers.torn[:5]
    assert dump(db) == dump(replica)


def snapshots_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_snapshot_under_writes_is_a_committed_state(tmp_path: Path, cluster: Cluster) -> None:
    """`sqlrepl snapshot` of a leader and of a follower under live transfers: each is a
    whole bank at the position it records, and `restore` says what it is."""
    db = bank_db(tmp_path / "bank.db", 4)
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    out = tmp_path / "snaps"
    out.mkdir()
    with Bank(db) as bank:
        wait_until(lambda: bank.committed > 20, "transfers")
        for node in (leader, follower):
            result = sqlrepl("snapshot", node.url, str(out), "--json")
            assert result.returncode == 0, result.stderr
            written = json.loads(result.stdout)
            plain = tmp_path / f"restored-{node.port}.db"
            restored = sqlrepl("restore", written["path"], str(plain))
            assert restored.returncode == 0, restored.stderr
            said = " ".join(restored.stdout.split())  # (rich wraps lines at 80 columns)
            assert "taken 20" in said and f"of the {node.role()} {node.url}" in said, said
            assert consistent(plain) > 0
    assert not bank.errors


def test_a_snapshot_killed_by_sigterm_leaves_nothing(tmp_path: Path, cluster: Cluster) -> None:
    """cron's `timeout` sends SIGTERM mid-download: exit non-zero, no temp file left."""
    db = bank_db(tmp_path / "bank.db", 24)
    leader = cluster.leader(db)
    out = tmp_path / "snaps"
    out.mkdir()
    with Proxy(leader.port) as link:
        link.throttle(4e6)
        proc = subprocess.Popen(
            [sys.executable, "-m", "sqlrepl", "snapshot", link.url, str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:

            def started() -> bool:
                return any(p.stat().st_size > 1 << 20 for p in out.iterdir())

            wait_until(started, "the snapshot to be under way", 30)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)  # (read: a full pipe would block it)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err.decode(), err
    assert snapshots_in(out) == []


def test_retention_by_count_and_age_per_cluster(tmp_path: Path, cluster: Cluster) -> None:
    """--keep 2 --keep-days 1: snapshots younger than a day stay, older ones beyond the
    newest two go; another cluster's snapshots under the same name are never touched."""
    db = bank_db(tmp_path / "bank.db", 1)
    leader = cluster.leader(db)
    out = tmp_path / "snaps"
    out.mkdir()
    first = sqlrepl("snapshot", leader.url, str(out), "--json")
    assert first.returncode == 0, first.stderr
    made = Path(json.loads(first.stdout)["path"])
    stem = made.name.rsplit("-", 1)[0]
    old = [f"{stem}-2020010{d}T000000Z.db" for d in range(1, 5)]
    for name in old:
        (out / name).write_bytes(made.read_bytes())
    recent = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    (out / f"{stem}-{recent}.db").write_bytes(made.read_bytes())
    other = bank_db(tmp_path / "other.db", 1)  # a snapshot of another cluster, same name
    other_leader = cluster.leader(other)
    foreign = sqlrepl("snapshot", other_leader.url, str(tmp_path / "foreign.db"))
    assert foreign.returncode == 0, foreign.stderr
    os.replace(tmp_path / "foreign.db", out / f"{stem}-20190101T000000Z.db")
    time.sleep(1.1)  # the next snapshot's name (to the second) differs from the first's
    result = sqlrepl("snapshot", leader.url, str(out), "--keep", "2", "--keep-days", "1", "--json")
    assert result.returncode == 0, result.stderr
    pruned = sorted(Path(p).name for p in json.loads(result.stdout)["pruned"])
    assert pruned == sorted(old)
    left = snapshots_in(out)
    assert made.name in left and f"{stem}-{recent}.db" in left
    assert f"{stem}-20190101T000000Z.db" in left and len(left) == 4


def test_max_lag_refuses_a_stale_follower(tmp_path: Path, cluster: Cluster) -> None:
    """--max-lag: a follower whose leader died is refused (exit 1, nothing written);
    caught up again, it is snapshotted."""
    db = bank_db(tmp_path / "bank.db", 1)
    leader = cluster.leader(db)
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    out = tmp_path / "snaps"
    out.mkdir()
    caught_up(db, follower)
    leader.kill9()  # (a SIGTERM would hand the leadership over to the follower)
    wait_until(lambda: follower.status()["lag"]["seconds"] > 1.5, "the follower to go stale")
    for source in (follower.url, str(replica)):
        refused = sqlrepl("snapshot", source, str(out), "--max-lag", "1")
        assert refused.returncode == 1 and "stale" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert snapshots_in(out) == []
    leader.start()
    caught_up(db, follower)
    fine = sqlrepl("snapshot", follower.url, str(out), "--max-lag", "5")
    assert fine.returncode == 0, fine.stderr
    assert len(snapshots_in(out)) == 1


def test_an_abandoned_transfer_unpins_its_image(tmp_path: Path, cluster: Cluster) -> None:
    """A receiver that goes away mid-transfer and never comes back: its image stays
    pinned for the resume grace only (30 s); then the WAL checkpoints whole again."""
    from sqlrepl.node.snapshots import SESSION_GRACE

    db = bank_db(tmp_path / "bank.db", 8)
    leader = cluster.leader(db)
    reader = socket.create_connection(("127.0.0.1", leader.port))
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sendall(b"GET /snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in reader.recv(100)
    reader.close()
    with Bank(db) as bank:
        wait_until(lambda: bank.committed > 20, "transfers")
    assert not bank.errors  # apps write on while the image is pinned

    assert not checkpoints_whole(db), "the image is pinned while it may be resumed"
    started = time.monotonic()
    wait_until(lambda: checkpoints_whole(db), "the image to be unpinned", SESSION_GRACE + 15)
    assert time.monotonic() - started > 5, "unpinned before the grace"


class Unpaused(Bank):
    """The bank with no pause between its transactions."""

    every = 0.0


class ReadThenWrite(Background):
    """A busy app's deferred transactions that read, then write (Django's atomic
    request), hundreds a second: any lock another connection holds when one upgrades
    fails it at once."""

    every = 0.001

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.done = 0
        self.errors: list[str] = []

    def step(self) -> None:
        try:
            self.conn.execute("BEGIN")
            (bal,) = self.conn.execute("SELECT bal FROM acct WHERE id = 0").fetchone()
            self.conn.execute("UPDATE acct SET bal = ? WHERE id = 0", (bal,))
            self.conn.execute("COMMIT")
            self.done += 1
        except sqlite3.Error as exc:
            self.errors.append(str(exc))
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.conn.close()


def test_snapshots_are_invisible_to_apps(tmp_path: Path, cluster: Cluster) -> None:
    """Forty snapshots while an app runs hundreds of read-then-write transactions a
    second: the app meets no error (a snapshot takes no lock an app could notice). Then
    forty beside an app that commits without any pause: the snapshots still come (holding
    writers off for a moment, which its busy timeout waits out)."""
    db = bank_db(tmp_path / "bank.db", 1)
    leader = cluster.leader(db)

    def snapshots(n: int) -> None:
        for _ in range(n):
            with urlopen_body(leader.url + "/snapshot") as answer:
                assert len(answer.read()) > db.stat().st_size // 2

    with ReadThenWrite(db) as app:
        snapshots(40)
        wait_until(lambda: app.done > 100, "app transactions")
    assert app.errors == [], app.errors[:3]
    assert "pinned under the write lock" not in leader.log()
    with Unpaused(db) as bank:
        snapshots(5)
    assert bank.errors == [] and bank.committed > 0, bank.errors[:3]


def urlopen_body(url: str) -> Any:
    """urlopen, with the server's error message in the failure."""
    try:
        return urllib.request.urlopen(url, timeout=30)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: {exc.code} {exc.read()!r}") from exc


def test_a_tail_direct_writes_refuse_is_written_buffered(tmp_path: Path) -> None:
    """A last chunk shorter than the disk's block (a small page size on a 4 KiB-sector
    disk) is refused by O_DIRECT: the writer drops O_DIRECT and writes it all the same."""
    from sqlrepl.core import image
    from sqlrepl.node import transfer

    path = tmp_path / "partial"
    path.write_bytes(b"")
    fd = transfer._open_for_writing(path, direct=True)
    try:
        writer = transfer._Writer(fd, image.CHUNK)
        frame = memoryview(writer.buffers[0])
        block = b"x" * 100  # no block size divides this
        frame[:100] = block
        frame[100 : 100 + image.DIGEST_SIZE] = image.digest(block)
        writer._keep(frame, 100, 0)
        writer.pool.shutdown()
    finally:
        os.close(fd)
    assert path.read_bytes() == block
