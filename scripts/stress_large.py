"""Large transactions at full size, outside the suite: each case commits one transaction
on a live leader with two followers and an archive, starts a third follower (a bootstrap
meanwhile), then checks every node and a point-in-time restore byte for byte against
the leader, and reports each daemon's peak RSS.

    python scripts/stress_large.py [--case blob,rows,small,limit] [--scale 1.0] [--json]

Cases (the issue's sizes at --scale 1):
    blob    one 200 MiB BLOB
    rows    300 rows of 1 MiB in one transaction
    small   a 2 GiB transaction of 4 KiB rows
    limit   one 950 MB value, near SQLite's default SQLITE_MAX_LENGTH (1e9)

The suite runs one case at a tiny scale (tests/e2e/test_large.py) so this keeps working.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import psutil

MIB = 1 << 20
#: case -> (rows, bytes per row)
CASES: dict[str, tuple[int, int]] = {
    "blob": (1, 200 * MIB),
    "rows": (300, MIB),
    "small": (2 * 1024 * MIB // 4096, 4096),
    "limit": (1, 950_000_000),
}
#: What the program promises (docs/limits.md): peak RSS of a daemon, plus one value
#: where SQLite cannot stream it (never in these cases: rowid tables, BLOB columns).
RSS_BOUND_MIB = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{args[0]}-{self.port}.log"
        self.args = [*args, "--listen", f"127.0.0.1:{self.port}"]
        self.proc: subprocess.Popen | None = None
        self.peak = 0

    def start(self, ready: bool = True) -> Daemon:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sqlrepl", *self.args], stdout=log, stderr=subprocess.STDOUT
            )
        if ready:
            wait(lambda: self.status().get("seq") is not None, 600)
        return self

    def status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
                return dict(json.load(r))
        except OSError:
            return {}

    def sample(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait(predicate: Any, deadline: float, every: float = 0.05) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every)
    raise RuntimeError("timed out")


def position(db: Path) -> int:
    """The seq a sqlrepl file holds, read from the file (polling a daemon would slow it)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT seq FROM _sqlrepl_position").fetchone()[0])
        finally:
            conn.close()
    except (sqlite3.Error, TypeError):
        return -1


def commit(db: Path, rows: int, size: int) -> None:
    """One app transaction of `rows` values of `size` bytes, written with incremental
    blob I/O (the app holds at most 16 MiB at a time)."""
    conn = sqlite3.connect(db, timeout=60)
    conn.execute("BEGIN")
    piece = hashlib.sha256(b"sqlrepl").digest() * (min(size, 16 * MIB) // 32 + 1)
    for _ in range(rows):
        cur = conn.execute("INSERT INTO big(v) VALUES(zeroblob(?))", (size,))
        with conn.blobopen("big", "v", int(cur.lastrowid or 0)) as blob:
            for offset in range(0, size, 16 * MIB):
                blob.write(piece[: min(16 * MIB, size - offset)])
    conn.commit()
    conn.close()


def digest(db: Path) -> str:
    """SHA-256 of every row of `big`, value by value, read in pieces."""
    h = hashlib.sha256()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for rowid, length in conn.execute("SELECT id, length(v) FROM big ORDER BY id").fetchall():
            h.update(f"{rowid}:{length}:".encode())
            with conn.blobopen("big", "v", rowid, readonly=True) as blob:
                while chunk := blob.read(16 * MIB):
                    h.update(chunk)
    finally:
        conn.close()
    return h.hexdigest()


def run_case(tmp: Path, name: str, scale: float) -> dict[str, Any]:
    rows, size = CASES[name]
    if rows > 1:  # a transaction of many rows: fewer (or more) of them
        rows = max(1, int(rows * scale))
    else:  # one value: a smaller (or larger) one
        size = max(1, int(size * scale))
    db = tmp / f"{name}.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB)")
    conn.commit()
    conn.close()
    leader = Daemon(tmp, "leader", str(db)).start()
    daemons = [leader]
    try:
        followers = [
            Daemon(tmp, "follower", str(tmp / f"{name}-f{i}.db"), "--leader", leader.url).start()
            for i in (1, 2)
        ]
        archive_dir = tmp / f"{name}-archive"
        archive = Daemon(tmp, "archive", str(archive_dir), "--leader", leader.url).start()
        daemons += [*followers, archive]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for d in daemons:
                    d.sample()
                stop.wait(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            commit(db, rows, size)
            committed = time.perf_counter()
            head = position(db)
            late = Daemon(tmp, "follower", str(tmp / f"{name}-late.db"), "--leader", leader.url)
            daemons.append(late.start(ready=False))
            files = [tmp / f"{name}-f1.db", tmp / f"{name}-f2.db"]
            wait(lambda: all(position(f) >= head for f in files), 7200, every=0.01)
            reached = time.perf_counter() - committed
            wait(lambda: position(tmp / f"{name}-late.db") >= head, 7200)
            wait(lambda: (archive.status().get("seq") or -1) >= head, 7200)
        finally:
            stop.set()
            sampler.join()
        archive.stop()
        want = digest(db)
        nodes = [*files, tmp / f"{name}-late.db"]
        equal = all(digest(f) == want for f in nodes)
        restored = tmp / f"{name}-restored.db"
        token = f"{leader.status().get('epoch')}:{head}"
        restore = ["restore", str(archive_dir), str(restored), "--at", token]
        result = subprocess.run(
            [sys.executable, "-m", "sqlrepl", *restore], capture_output=True, text=True
        )
        restore_equal = result.returncode == 0 and digest(restored) == want
        tracebacks = sum("Traceback" in Path(d.log).read_text() for d in daemons)
        return {
            "case": name,
            "rows": rows,
            "bytes": rows * size,
            "commit_to_followers_s": round(reached, 3),
            "leader_rss_mib": round(leader.peak / MIB, 1),
            "follower_rss_mib": [round(d.peak / MIB, 1) for d in [*followers, late]],
            "archive_rss_mib": round(archive.peak / MIB, 1),
            "rss_bound_mib": RSS_BOUND_MIB,
            "equal": equal,
            "restore_equal": restore_equal,
            "restore_error": None if result.returncode == 0 else result.stderr.strip(),
            "tracebacks": tracebacks,
        }
    finally:
        for d in daemons:
            d.stop()
        for path in tmp.glob(f"{name}*"):
            if path.is_file():
                path.unlink()


@click.command()
@click.option("--case", "cases", default=",".join(CASES), show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True, help="Sizes × this.")
@click.option("--json", "as_json", is_flag=True)
def main(cases: str, scale: float, as_json: bool) -> None:
    report: dict[str, Any] = {"scale": scale, "cases": []}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        for name in cases.split(","):
            report["cases"].append(run_case(Path(d), name, scale))
            if not as_json:
                print(json.dumps(report["cases"][-1]), flush=True)
    if as_json:
        print(json.dumps(report, indent=2))
    ok = all(c["equal"] and c["restore_equal"] and not c["tracebacks"] for c in report["cases"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
