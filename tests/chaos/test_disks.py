"""Disk faults, on small tmpfs mounts made for the test (root only; skipped otherwise):
a leader whose disk fills up steps down and another node takes writes; a follower whose
disk fills up during a snapshot download retries, says so in status, and bootstraps once
there is room. Every mount is removed at the end, whatever happened."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from ..helpers.apps import TTL, app_db, big_db, open_leader, temps, unaccounted, wait_open_leader
from ..helpers.daemons import Cluster, Sampler, WriteSampler, http_status, wait_until
from ..helpers.disks import Tmpfs
from ..helpers.etcd import EtcdServer


def test_a_leader_whose_disk_fills_up_steps_down(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer, tmpfs: Tmpfs
) -> None:
    """The leader's file is on a disk that fills up: it gives its lease up, a follower
    takes writes, never two at once; when space returns, the old leader rejoins, and
    every acknowledged write is on the final leader or in a rollback file."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL)]
    files = [app_db(tmpfs.path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
    leader = cluster.leader(files[0], *coord)
    wait_until(lambda: leader.status().get("gate") == "open", "the leader to take the lease")
    nodes = [leader] + [cluster.follower(f, leader, *coord) for f in files[1:]]
    with WriteSampler(nodes, files) as sampler:
        wait_until(lambda: len(sampler.acked) > 10, "app writes on the leader")
        filler = tmpfs.fill()
        wait_until(lambda: open_leader(nodes[1:]) is not None, "a new leader", TTL + 20)
        status = leader.status()
        assert "No space left on device" in str(status.get("error")), status
        assert "stepped down" in leader.log()
        filler.unlink()
        wait_until(lambda: leader.role() == "follower", "the old leader to rejoin", 40)
        new = wait_open_leader(nodes[1:], "the new leader")
        wait_until(lambda: leader.status().get("state") == "streaming", "it to stream")
    final = files[nodes.index(new)]
    assert unaccounted(set(sampler.acked), final, tmp_path) == set()
    assert unaccounted(set(sampler.acked), final, tmpfs.path) == set()


def test_a_leader_whose_disk_turns_read_only_shows_its_gate_closed(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer, tmpfs: Tmpfs
) -> None:
    """The leader's disk turns read-only under it: another node takes writes, and no
    status ever shows two nodes leading with their gates open, whatever their leases
    (sampled every 100 ms), nor do two files take app writes at once."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL)]
    files = [app_db(tmpfs.path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
    leader = cluster.leader(files[0], *coord)
    wait_until(lambda: leader.status().get("gate") == "open", "the leader to take the lease")
    nodes = [leader] + [cluster.follower(f, leader, *coord) for f in files[1:]]
    with Sampler(nodes, strict=True) as sampler, WriteSampler(nodes, files):
        tmpfs.read_only()
        wait_until(lambda: open_leader(nodes[1:]) is not None, "a new leader", TTL + 20)
        seen = sampler.samples
        wait_until(lambda: sampler.samples > seen + 50, "status sampled after the failover")
        status = leader.status()
        assert status["gate"] == "closed" and not status["writable"], status
        assert "Read-only file system" in str(status["error"]), status
    tmpfs.writable()


def test_a_follower_whose_disk_fills_during_bootstrap_retries(
    tmp_path: Path, cluster: Cluster, tmpfs: Tmpfs
) -> None:
    """A snapshot bigger than the follower's free space: the follower stays up, says why
    in status, leaves no temp file, and bootstraps once the disk grows."""
    db = big_db(tmp_path / "a.db", 24)
    leader = cluster.leader(db)
    follower = cluster.follower(tmpfs.path / "b.db", leader, ready=False)
    wait_until(
        lambda: "No space left" in str(_status(follower).get("error")), "the full disk reported"
    )
    assert follower.proc is not None and follower.proc.poll() is None
    assert _status(follower)["state"] == "retrying"
    wait_until(lambda: temps(tmpfs.path) == [], "the partial download removed")
    tmpfs.resize("128m")
    wait_until(lambda: _status(follower).get("seq") is not None, "the bootstrap", 60)
    cluster.wait_caught_up(db, follower)
    assert "Traceback" not in follower.log()
    assert os.path.getsize(tmpfs.path / "b.db") > 20 << 20


def _status(node: object) -> dict:
    try:
        return node.status()  # type: ignore[attr-defined, no-any-return]
    except OSError:
        return {}


def test_a_static_leader_on_a_full_disk_gives_one_answer_everywhere(
    tmp_path: Path, cluster: Cluster, tmpfs: Tmpfs
) -> None:
    """A static leader whose disk fills up (nobody to step down to): /health, /leader,
    /status and /metrics all say it takes no writes, and all say it does again once
    there is room."""
    leader = cluster.leader(app_db(tmpfs.path / "a.db"))

    def answers() -> tuple[int, int, bool, str, bool]:
        status = leader.status()
        with urllib.request.urlopen(leader.url + "/metrics", timeout=5) as response:
            metrics = response.read().decode()
        gate_metric = "sqlrepl_write_gate_open 1.0" in metrics
        health = http_status(leader.url + "/health")
        return (
            health,
            http_status(leader.url + "/leader"),
            status["writable"],
            status["gate"],
            gate_metric,
        )

    assert answers() == (200, 200, True, "open", True)
    filler = tmpfs.fill()
    wait_until(lambda: http_status(leader.url + "/health") == 503, "the full disk seen", 20)
    assert answers() == (503, 503, False, "closed", False)
    assert "No space left on device" in str(leader.status()["error"])
    filler.unlink()
    wait_until(lambda: http_status(leader.url + "/health") == 200, "room again", 20)
    assert answers() == (200, 200, True, "open", True)
