"""Prometheus metrics, checked by Prometheus' own tools: `promtool check metrics` on
every node's /metrics, and a real Prometheus server scraping a 3-node cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers.apps import app_db
from ..helpers.daemons import Cluster, Daemon, free_port, insert, wait_until

NEEDED = (
    "sqlrepl_role",
    "sqlrepl_epoch",
    "sqlrepl_seq",
    "sqlrepl_write_gate_open",
    "sqlrepl_lease_held",
    "sqlrepl_batches_shipped_total",
    "sqlrepl_batches_applied_total",
    "sqlrepl_rows_applied_total",
    "sqlrepl_batch_build_seconds_bucket",
    "sqlrepl_batch_apply_seconds_bucket",
    "sqlrepl_sent_bytes_total",
    "sqlrepl_received_bytes_total",
)


def scrape(node: Daemon) -> str:
    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as answer:
        return answer.read().decode()


@pytest.fixture
def three(tmp_path: Path, cluster: Cluster) -> tuple[Path, list[Daemon]]:
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    followers = [cluster.follower(tmp_path / f"f{i}.db", leader) for i in (1, 2)]
    for i in range(50):
        insert(db, f"row{i}")
    cluster.wait_caught_up(db, *followers)
    return db, [leader, *followers]


def test_every_nodes_metrics_pass_promtool(three: tuple[Path, list[Daemon]]) -> None:
    """Each node's /metrics passes `promtool check metrics` and names its role, position,
    traffic and timings; the leader lists each follower's lag."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (scripts/test.sh installs Debian's prometheus)")
    _db, nodes = three
    for node in nodes:
        text = scrape(node)
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        for name in NEEDED:
            assert name in text, f"{name} missing from {node.name}"
    leader_text = scrape(nodes[0])
    assert 'sqlrepl_role{role="leader"} 1.0' in leader_text
    for follower in nodes[1:]:
        assert f'sqlrepl_follower_lag_changes{{follower="{follower.url}"}} 0.0' in leader_text
        assert 'sqlrepl_role{role="follower"} 1.0' in scrape(follower)
        assert "sqlrepl_snapshots_total" in scrape(follower)


@pytest.fixture
def prometheus(tmp_path: Path, three: tuple[Path, list[Daemon]]) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (scripts/test.sh installs it)")
    _db, nodes = three
    port = free_port()
    targets = json.dumps([f"127.0.0.1:{n.port}" for n in nodes])
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: sqlrepl\n"
        f"    static_configs:\n      - targets: {targets}\n"
    )
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(15)


def query(server: str, promql: str) -> list[dict]:
    url = f"{server}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return list(json.load(answer)["data"]["result"])
    except OSError:
        return []  # not up yet


def test_prometheus_scrapes_the_cluster_and_answers_for_follower_lag(
    three: tuple[Path, list[Daemon]], prometheus: str
) -> None:
    """A Prometheus server scraping three nodes answers PromQL for each follower's lag
    (as the leader sees it and as the follower does) and for who leads."""
    _db, nodes = three
    lag = 'max by (follower) (sqlrepl_follower_lag_changes{job="sqlrepl"})'
    wait_until(lambda: len(query(prometheus, lag)) == 2, "Prometheus to scrape the leader", 60)
    assert {r["metric"]["follower"] for r in query(prometheus, lag)} == {n.url for n in nodes[1:]}
    own = "sqlrepl_lag_seconds"
    wait_until(lambda: len(query(prometheus, own)) == 2, "the followers' own lag", 60)
    leaders = query(prometheus, 'sqlrepl_role{role="leader"} == 1')
    assert [r["metric"]["instance"] for r in leaders] == [f"127.0.0.1:{nodes[0].port}"]
