"""Faults an unattended cluster meets: processes killed mid-transfer, restarted leaders
rejoining while apps write. Each checks from outside: files on disk, app writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ..helpers.apps import app_db, big_db, temps
from ..helpers.daemons import Cluster, insert, wait_until
from ..helpers.dump import log_head, scalar


def test_temp_files_of_killed_processes_are_removed(tmp_path: Path, cluster: Cluster) -> None:
    """A leader killed with -9 while serving a snapshot leaves nothing behind (it streams
    the file itself, no temporary copy); `sqlrepl snapshot` killed with -9 while writing
    one leaves a temp file that the next snapshot into that directory removes, and
    retention never counts it."""
    db = big_db(tmp_path / "a.db", 64)
    leader = cluster.leader(db)
    reader = socket.create_connection(("127.0.0.1", leader.port))
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sendall(b"GET /snapshot HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in reader.recv(100)  # the transfer started; now read nothing more
    copies = [p for p in tmp_path.iterdir() if p.stat().st_size > 8 << 20 and p.name != "a.db"]
    assert temps(tmp_path) == [] and copies == []
    leader.kill9()
    reader.close()
    assert temps(tmp_path) == []
    leader.start()

    backups = tmp_path / "backups"
    backups.mkdir()
    cli = [sys.executable, "-m", "sqlrepl", "snapshot", leader.url, str(backups), "--keep", "1"]
    for _attempt in range(5):
        proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 30
        while time.monotonic() < end and not temps(backups) and proc.poll() is None:
            time.sleep(0.001)
        if temps(backups):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        proc.wait()
    assert temps(backups), "never caught the snapshot command mid-write"
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert temps(backups) == []
    kept = [p.name for p in backups.iterdir()]
    assert len(kept) == 1 and kept[0].endswith(".db"), kept


def test_rejoin_loses_no_app_write(tmp_path: Path, cluster: Cluster) -> None:
    """A crashed leader restarted while an app writes to it every few ms, ten times: every
    write the app got a commit for is on the new leader or in the rollback file."""
    from ..helpers.apps import unaccounted

    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    b = cluster.follower(tmp_path / "b.db", leader)
    acked: set[str] = set()
    n = 0
    for _round in range(10):
        files = {leader: db, b: tmp_path / "b.db"}
        current = leader if leader.role() == "leader" else b
        other = b if current is leader else leader
        cluster.wait_caught_up(files[current], other)
        current.kill9()
        promoted = subprocess.run(
            [sys.executable, "-m", "sqlrepl", "promote", other.url, "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert promoted.returncode == 0, promoted.stderr
        current.start(ready=False)
        end = time.monotonic() + 20
        while time.monotonic() < end and current.role() != "follower":
            n += 1
            try:
                conn = sqlite3.connect(files[current], timeout=1)
                conn.execute("INSERT INTO t(v) VALUES(?)", (f"app-{n}",))
                conn.commit()
                conn.close()
                acked.add(f"app-{n}")
            except sqlite3.DatabaseError:
                pass
            time.sleep(0.005)
        current.wait_ready()
    final = db if leader.role() == "leader" else tmp_path / "b.db"
    assert unaccounted(acked, final, tmp_path) == set()


def test_rollback_keeps_writes_trimmed_from_the_log(tmp_path: Path, cluster: Cluster) -> None:
    """A leader that trimmed its log past the point where a stale peer stopped is deposed
    by that peer: every write it acknowledged after the fork point is in its rollback
    file, although its log no longer names most of them."""
    from ..helpers.apps import run_cli, unaccounted

    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db, "--log-limit", "5")
    c = cluster.follower(tmp_path / "c.db", leader)
    insert(db, "shared")
    cluster.wait_caught_up(db, c)
    c.stop()
    acked = {"shared"} | {f"w1-{i}" for i in range(30)}
    for value in sorted(acked - {"shared"}):
        insert(db, value)
    oldest = scalar(db, "SELECT min(seq) FROM _sqlrepl_log")
    assert oldest > log_head(db) - 10, "the log keeps the newest 5 changes only"
    leader.kill9()
    c.start()
    assert run_cli("promote", c.url, "--force")["epoch"] == 2
    insert(tmp_path / "c.db", "new timeline")
    leader.start()  # the same command: it finds the newer leader and rejoins it
    wait_until(lambda: leader.role() == "follower", "the deposed leader to rejoin")
    wait_until(lambda: leader.status().get("rollback") is not None, "the rollback reported")
    assert unaccounted(acked, tmp_path / "c.db", tmp_path) == set()
    rolled = [
        json.loads(line) for line in Path(leader.status()["rollback"]).read_text().splitlines()
    ]
    assert {c["row"]["v"] for c in rolled if c["op"] == "upsert"} == acked - {"shared"}
