"""`sqlrepl demo`: a leader and two followers on loopback, a live writer, a live status table."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import render
from .admin import cluster_status
from .errors import SqlreplError
from .sample import build as build_sample

READY_DEADLINE = 30.0
CATCH_UP_DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def content_digest(path: Path) -> str:
    """SHA-256 over every user table's rows, typed, in key order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    digest = hashlib.sha256()
    try:
        tables = conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
            "AND substr(name, 1, 9) <> '_sqlrepl_' ORDER BY name"
        ).fetchall()
        for (table,) in tables:
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1, 2'):
                digest.update(repr([(type(v).__name__, v) for v in row]).encode())
    finally:
        conn.close()
    return digest.hexdigest()


def _log_head(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM _sqlrepl_log").fetchone()[0])
    finally:
        conn.close()


class Shopper(threading.Thread):
    """An app writing realistic transactions to the leader with the stdlib driver."""

    def __init__(self, db: Path, rate: float = 100.0) -> None:
        super().__init__(daemon=True)
        self.db, self.rate, self.stop, self.orders = db, rate, threading.Event(), 0

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30, isolation_level=None)
        rnd = random.Random(1)
        skus = [s for (s,) in conn.execute("SELECT sku FROM products")]
        while not self.stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            (oid,) = conn.execute(
                "INSERT INTO orders(customer_id, placed, status, total) "
                "VALUES(?, strftime('%Y-%m-%dT%H:%M:%SZ'), 'new', 0) RETURNING id",
                (rnd.randint(1, 500),),
            ).fetchone()
            for sku in rnd.sample(skus, rnd.randint(1, 3)):
                qty = rnd.randint(1, 3)
                conn.execute("INSERT INTO order_items VALUES(?, ?, ?, 9.99)", (oid, sku, qty))
                conn.execute("UPDATE products SET stock = stock - ? WHERE sku = ?", (qty, sku))
            conn.execute(
                "UPDATE orders SET total = (SELECT sum(qty * unit_price) FROM order_items "
                "WHERE order_id = ?) WHERE id = ?",
                (oid, oid),
            )
            conn.execute("COMMIT")
            self.orders += 1
            time.sleep(1 / self.rate)
        conn.close()


class DemoCluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []

    def start(self, *args: str) -> str:
        port = _free_port()
        name = f"{args[0]}-{port}"
        with open(self.workdir / f"{name}.log", "w") as log:
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "sqlrepl", *args, "--listen", f"127.0.0.1:{port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        url = f"http://127.0.0.1:{port}"
        self.urls.append(url)
        return url

    def wait_ready(self) -> None:
        end = time.monotonic() + READY_DEADLINE
        while time.monotonic() < end:
            nodes = cluster_status(self.urls, None)
            if all(n["ok"] and n.get("seq") is not None for n in nodes):
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        raise SqlreplError(f"demo nodes did not start; see the logs in {self.workdir}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def run_demo(duration: float, sample: Path | None) -> bool:
    """Run the demo; True if both followers ended identical to the leader."""
    workdir = Path(tempfile.mkdtemp(prefix="sqlrepl-demo-"))
    leader_db = workdir / "leader.db"
    if sample is None:
        build_sample(leader_db)
    else:
        shutil.copyfile(sample, leader_db)
    render.console.print(f"Demo in [bold]{workdir}[/]: a leader and two followers on loopback")
    cluster = DemoCluster(workdir)
    shopper = Shopper(leader_db)
    try:
        leader = cluster.start("leader", str(leader_db))
        for i in (1, 2):
            cluster.start("follower", str(workdir / f"follower{i}.db"), "--leader", leader)
        cluster.wait_ready()
        shopper.start()
        render.live_status(
            lambda: cluster_status(cluster.urls, None),
            duration,
            lambda: f"{shopper.orders} orders written to the leader",
        )
        shopper.stop.set()
        shopper.join()
        return _verify(cluster, leader_db, workdir)
    finally:
        shopper.stop.set()
        cluster.stop()


def _verify(cluster: DemoCluster, leader_db: Path, workdir: Path) -> bool:
    target = _log_head(leader_db)
    end = time.monotonic() + CATCH_UP_DEADLINE
    while time.monotonic() < end:
        nodes = cluster_status(cluster.urls[1:], None)
        if all(n["ok"] and (n.get("seq") or 0) >= target for n in nodes):
            break
        time.sleep(0.1)
    expected = content_digest(leader_db)
    ok = True
    for i in (1, 2):
        same = content_digest(workdir / f"follower{i}.db") == expected
        ok &= same
        render.console.print(
            f"follower{i}.db {'[green]identical to[/]' if same else '[red]DIFFERS from[/]'} "
            f"the leader at seq {target}"
        )
    render.print_status(cluster_status(cluster.urls, None))
    return ok
