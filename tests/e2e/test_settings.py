"""The cluster's settings bind whichever node leads (issue 25): `min_sync_replicas` set
once, by the first leader's flag, survives two failovers in a row, in static and etcd
mode, and `sqlrepl config cluster URL --set` changes it at run time. Checked from
outside: app writes attempted on the leader's file."""

from __future__ import annotations

from pathlib import Path

from ..helpers.apps import TTL, accepts_writes, app_db, run_cli, wait_open_leader
from ..helpers.daemons import Cluster, Daemon, free_port, sqlrepl, wait_until
from ..helpers.etcd import EtcdServer


def _follows(node: Daemon, leader: Daemon) -> bool:
    seen = node.status()
    return seen.get("leader") == leader.url and seen.get("state") == "streaming"


def _min_sync(node: Daemon) -> object:
    """The cluster's min_sync_replicas as the node leads by it (None: not leading yet)."""
    return (node.status().get("settings") or {}).get("min_sync_replicas")


def _refuses(db: Path) -> bool:
    return not accepts_writes(db)


def test_min_sync_replicas_of_the_cluster_survives_two_static_failovers(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Static: a leads with --min-sync-replicas 1; b and c are plain followers. a dies,
    b is promoted (c follows it), then b dies and c is promoted: c, with no follower,
    keeps its gate closed. Changed at run time to 0, c's gate opens."""
    dbs = [app_db(tmp_path / "a.db"), tmp_path / "b.db", tmp_path / "c.db"]
    a = cluster.leader(dbs[0], "--min-sync-replicas", "1", "--max-replica-lag", "2")
    b = cluster.follower(dbs[1], a)
    c = cluster.follower(dbs[2], a)
    wait_until(lambda: accepts_writes(dbs[0]), "a to accept writes with fresh followers")
    a.kill9()
    assert run_cli("promote", b.url)["epoch"] == 2
    wait_until(lambda: _follows(c, b), "c to follow the promoted b")
    wait_until(lambda: accepts_writes(dbs[1]), "b to accept writes with c fresh")
    assert _min_sync(b) == 1
    b.kill9()
    run_cli("promote", "--force", c.url)
    wait_until(lambda: c.role() == "leader", "c to lead")
    wait_until(lambda: _refuses(dbs[2]), "c, with no follower, to refuse writes")
    assert "min_sync_replicas" in " ".join(c.status()["problems"])
    _set_and_see_writes(c, dbs[2])


def test_min_sync_replicas_of_the_cluster_survives_two_etcd_failovers(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """etcd: the first leader seeds min_sync_replicas 1 into the cluster; the nodes
    started as `sqlrepl follower` without it lead by it after each of two failovers."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL)]
    dbs = [app_db(tmp_path / "a.db"), tmp_path / "b.db", tmp_path / "c.db"]
    a = cluster.leader(dbs[0], *coord, "--min-sync-replicas", "1", "--max-replica-lag", "2")
    b = cluster.follower(dbs[1], a, *coord)
    c = cluster.follower(dbs[2], a, *coord)
    wait_until(lambda: accepts_writes(dbs[0]), "a to accept writes with fresh followers")
    a.kill9()
    first = wait_open_leader([b, c], "a new leader", 30)
    other = c if first is b else b
    other_db = dbs[2] if first is b else dbs[1]
    wait_until(lambda: _min_sync(first) == 1, "the new leader to lead by the cluster's settings")
    first.kill9()
    wait_until(lambda: other.role() == "leader", "the last node to lead", 30)
    wait_until(lambda: _refuses(other_db), "the last leader, with no follower, to refuse")
    assert "min_sync_replicas" in " ".join(other.status()["problems"])
    _set_and_see_writes(other, other_db)


def test_min_sync_replicas_seeded_by_one_node_config_binds_every_host(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """`sqlrepl node --config` on three hosts, etcd; only host 0's TOML says
    min_sync_replicas = 1. After two failovers the last host leads by it."""
    ports = [free_port() for _ in range(3)]
    files = [app_db(tmp_path / "h0.db"), tmp_path / "h1.db", tmp_path / "h2.db"]
    hosts = []
    for i, port in enumerate(ports):
        lines = [
            f'db = "{files[i]}"',
            f'listen = "127.0.0.1:{port}"',
            "members = [" + ", ".join(f'"http://127.0.0.1:{p}"' for p in ports if p != port) + "]",
            f'coordinator = "{etcd.coordinator()}"',
            f"ttl = {TTL}",
            "max_replica_lag = 2.0",
            *(["min_sync_replicas = 1"] if i == 0 else []),
        ]
        conf = tmp_path / f"h{i}.toml"
        conf.write_text("\n".join(lines) + "\n")
        host = Daemon(tmp_path, f"host{i}", ["node", "--config", str(conf)], port)
        cluster.daemons.append(host)
        hosts.append(host)
    for host in hosts[1:]:
        host.start(ready=False)
    hosts[0].start()
    for host in hosts[1:]:
        host.wait_ready()
    wait_until(lambda: accepts_writes(files[0]), "host 0 to accept writes with fresh followers")
    hosts[0].kill9()
    first = wait_open_leader(hosts[1:], "a new leader", 30)
    wait_until(lambda: _min_sync(first) == 1, "the new leader to lead by the cluster's settings")
    first.kill9()
    last = hosts[2] if first is hosts[1] else hosts[1]
    last_db = files[hosts.index(last)]
    wait_until(lambda: last.role() == "leader", "the last host to lead", 30)
    wait_until(lambda: _refuses(last_db), "the last leader, with no follower, to refuse")
    _set_and_see_writes(last, last_db)


def _set_and_see_writes(leader: Daemon, db: Path) -> None:
    """`config cluster --set min_sync_replicas=0` binds the leader within seconds."""
    shown = run_cli("config", "cluster", leader.url, "--set", "min_sync_replicas=0")
    assert shown["min_sync_replicas"] == 0
    wait_until(lambda: accepts_writes(db), "writes once min_sync_replicas is 0", 10)
    bad = sqlrepl("config", "cluster", leader.url, "--set", "min_sync_replicas=many")
    assert bad.returncode == 1 and "must be a number" in bad.stderr, bad.stderr
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
