"""What operators do, and what must hold: one daemon per file, refusals that change
nothing, advertised URLs, honest freshness in status and `status --check`."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from ..helpers.apps import app_db, fingerprint, refused
from ..helpers.daemons import Cluster, Daemon, free_port, get_json, insert, sqlrepl, wait_until
from ..helpers.etcd import EtcdServer


def plain_db(path: Path) -> Path:
    """An app's database in the default rollback-journal mode, with one row."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(v) VALUES('app row')")
    conn.commit()
    conn.close()
    return path


def test_a_second_daemon_on_the_same_file_is_refused(tmp_path: Path, cluster: Cluster) -> None:
    """While a daemon runs on a file, another (leader or follower) is refused at once; a
    daemon killed with -9 never blocks its restart."""
    db = app_db(tmp_path / "a.db")
    first = cluster.leader(db)
    second = sqlrepl("leader", str(db), "--listen", f"127.0.0.1:{free_port()}", timeout=20)
    refused(second, "already runs on")
    other = sqlrepl(
        "follower", str(db), "--leader", first.url, "--listen", f"127.0.0.1:{free_port()}"
    )
    refused(other, "already runs on")
    assert first.status()["gate"] == "open"
    first.kill9()
    again = cluster.leader(db)
    assert again.status()["role"] == "leader"


def test_refusals_at_start_leave_the_file_as_it_was(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """A port in use, a foreign etcd cluster, a wildcard address without --advertise, a
    locked file: each refusal leaves bytes, journal mode and schema untouched."""
    db = plain_db(tmp_path / "app.db")
    before = fingerprint(db)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        refused(sqlrepl("leader", str(db), "--listen", f"127.0.0.1:{port}"), "cannot listen")
    assert fingerprint(db) == before
    other = cluster.leader(app_db(tmp_path / "other.db"), "--coordinator", etcd.coordinator())
    wait_until(lambda: other.status()["gate"] == "open", "the other cluster to lead")
    other.stop()
    foreign = sqlrepl(
        "leader", str(db), "--listen", f"127.0.0.1:{free_port()}",
        "--coordinator", etcd.coordinator(),
    )  # fmt: skip
    refused(foreign, "already serves sqlrepl cluster")
    assert fingerprint(db) == before
    wildcard = sqlrepl("leader", str(db), "--listen", f"0.0.0.0:{free_port()}",
                       env={"SQLREPL_TOKEN": "s3cret"})  # fmt: skip
    refused(wildcard, "needs --advertise")
    assert fingerprint(db) == before


def test_advertised_urls_are_what_others_see(tmp_path: Path, cluster: Cluster) -> None:
    """With --listen 0.0.0.0 and --advertise, status, the leader's follower list and the
    follower's leader are the advertised URLs, never 0.0.0.0."""
    env = {"SQLREPL_TOKEN": "s3cret"}
    db = app_db(tmp_path / "a.db")
    lport, fport = free_port(), free_port()
    leader = Daemon(tmp_path, "adv-leader", ["leader", str(db), "--listen", f"0.0.0.0:{lport}",
                    "--advertise", f"http://127.0.0.1:{lport}"], lport, env)  # fmt: skip
    cluster.daemons.append(leader.start())
    follower = Daemon(tmp_path, "adv-follower", [
        "follower", str(tmp_path / "b.db"), "--leader", leader.url,
        "--listen", f"0.0.0.0:{fport}", "--advertise", f"http://127.0.0.1:{fport}/",
    ], fport, env)  # fmt: skip
    cluster.daemons.append(follower.start())
    insert(db, "x")
    cluster.wait_caught_up(db, follower)
    status = leader.status()
    assert status["url"] == f"http://127.0.0.1:{lport}"
    assert [f["url"] for f in status["followers"]] == [f"http://127.0.0.1:{fport}"]
    assert follower.status()["url"] == f"http://127.0.0.1:{fport}"
    assert "0.0.0.0" not in leader.log() + follower.log()


def test_freshness_is_honest(tmp_path: Path, cluster: Cluster) -> None:
    """An idle, healthy follower is `streaming` with lag 0 and a recent last contact; once
    its leader is gone its lag in seconds grows, and `status --check` says so."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "b.db", leader)
    wait_until(lambda: follower.status()["state"] == "streaming", "streaming on an idle leader")
    end = time.monotonic() + 8
    while time.monotonic() < end:
        s = follower.status()
        assert s["lag"]["seconds"] == 0 and s["last_contact"] is not None
        assert s["last_contact"] <= 5, s
        time.sleep(0.5)
    healthy = sqlrepl("status", "--check", leader.url, follower.url)
    assert healthy.returncode == 0, healthy.stderr
    leader.kill9()
    wait_until(lambda: follower.status()["lag"]["seconds"] > 6, "the lag to grow", 20)
    first = follower.status()["lag"]["seconds"]
    wait_until(lambda: follower.status()["lag"]["seconds"] > first + 1, "it to keep growing")
    stale = sqlrepl("status", "--check", "--max-lag-seconds", "5", follower.url)
    assert stale.returncode == 1 and follower.url in stale.stderr, stale.stderr


@pytest.mark.parametrize("which", ["leader", "follower"])
def test_status_check_on_a_stuck_node(tmp_path: Path, cluster: Cluster, which: str) -> None:
    """`status --check` exits 1 for an unreachable node and 0 for a healthy pair."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "b.db", leader)
    wait_until(lambda: follower.status()["state"] == "streaming", "streaming")
    assert sqlrepl("status", "--check", leader.url, follower.url).returncode == 0
    (leader if which == "leader" else follower).kill9()
    down = sqlrepl("status", "--check", leader.url, follower.url)
    assert down.returncode == 1
    assert "unreachable" in down.stderr
    assert get_json(leader.url + "/status" if which == "follower" else follower.url + "/status")
