"""Snapshots become writable only through `sqlrepl restore`: a new cluster by default, or
a new epoch of the old one that followers ahead of it see as a fork."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..helpers.apps import app_db, fingerprint, refused, values
from ..helpers.daemons import Cluster, Daemon, free_port, insert, sqlrepl, wait_until
from ..helpers.dump import dump


def snapshot_of(url: str, dest: Path) -> Path:
    result = sqlrepl("snapshot", url, str(dest), "--json")
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["path"])


def backed_up(tmp: Path, cluster: Cluster, value: str) -> tuple[Path, Daemon, Daemon, Path]:
    """A leader with one app row and a follower that has it, and a snapshot taken then."""
    db = app_db(tmp / "a.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp / "b.db", leader)
    insert(db, value)
    cluster.wait_caught_up(db, follower)
    return db, leader, follower, snapshot_of(leader.url, tmp / "snap.db")


def sqlrepl_tables(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_schema WHERE name LIKE '\\_sqlrepl%' ESCAPE '\\'"
        )
        return [n for (n,) in rows]
    finally:
        conn.close()


def test_a_snapshot_is_not_a_leader_until_restored(tmp_path: Path, cluster: Cluster) -> None:
    """`sqlrepl leader SNAPSHOT` is refused and changes nothing; `restore` makes a plain
    file that a leader turns into a new cluster, which the old followers refuse."""
    db, leader, follower, snap = backed_up(tmp_path, cluster, "in the snapshot")
    before = fingerprint(snap)
    refused(sqlrepl("leader", str(snap), "--listen", "127.0.0.1:1"), "is a snapshot")
    assert fingerprint(snap) == before
    info = json.loads(sqlrepl("restore", str(snap), str(tmp_path / "new.db"), "--json").stdout)
    assert info["as"] == "new cluster" and info["source"]["cluster"] == leader.status()["cluster"]
    assert info["source"]["of"] == "leader" and info["source"]["seq"] >= 1
    assert sqlrepl_tables(tmp_path / "new.db") == []
    assert values(tmp_path / "new.db") == {"in the snapshot"}
    refused(sqlrepl("restore", str(snap), str(tmp_path / "new.db")), "already exists")
    refused(sqlrepl("restore", str(db), str(tmp_path / "x.db")), "nothing to restore")
    assert not (tmp_path / "x.db").exists()
    fresh = cluster.leader(tmp_path / "new.db")
    assert fresh.status()["cluster"] != leader.status()["cluster"]
    leader.kill9()
    follower.stop()
    stray = sqlrepl("follower", str(tmp_path / "b.db"), "--leader", fresh.url,
                    "--listen", f"127.0.0.1:{free_port()}", timeout=30)  # fmt: skip
    refused(stray, "belongs to cluster", logs=True)


def test_restore_as_leader_makes_followers_ahead_of_it_fork(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Restored as the old cluster's leader, a backup leads a new epoch from its position;
    a follower that had gone further reports the fork, keeps its content aside, and ends
    equal to the restored leader."""
    db, leader, follower, snap = backed_up(tmp_path, cluster, "in the backup")
    insert(db, "after the backup")
    cluster.wait_caught_up(db, follower)
    leader.kill9()
    follower.stop()
    restored = tmp_path / "restored.db"
    out = sqlrepl("restore", str(snap), str(restored), "--as-leader", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["source"]["epoch"] == 2
    new_leader = cluster.leader(restored)
    assert new_leader.status()["epoch"] == 2 and new_leader.status()["gate"] == "open"
    again = cluster.follower(tmp_path / "b.db", new_leader)
    wait_until(lambda: again.status().get("rollback") is not None, "the fork to be reported")
    cluster.wait_caught_up(restored, again)
    assert dump(restored) == dump(tmp_path / "b.db")
    assert values(Path(again.status()["rollback"])) == {"in the backup", "after the backup"}
