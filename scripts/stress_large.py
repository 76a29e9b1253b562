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
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import psutil

# The test helpers' daemons (started, waited for and stopped as the suite does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.daemons import Cluster, Daemon, sqlrepl, wait_until  # noqa: E402
from tests.helpers.dump import scalar  # noqa: E402

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


class Peaks:
    """The peak RSS of each daemon, sampled every 50 ms in a thread while a case runs."""

    def __init__(self, daemons: list[Daemon]) -> None:
        self.daemons = daemons
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            for d in self.daemons:
                if d.proc is not None and d.proc.poll() is None:
                    with contextlib.suppress(psutil.Error):
                        rss = psutil.Process(d.proc.pid).memory_info().rss
                        self.peak[d.name] = max(self.peak.get(d.name, 0), rss)
            self._stop.wait(0.05)

    def mib(self, d: Daemon) -> float:
        return round(self.peak.get(d.name, 0) / MIB, 1)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def position(db: Path) -> int:
    """The seq a sqlrepl file holds, read from the file (polling a daemon would slow it)."""
    try:
        return int(scalar(db, "SELECT seq FROM _sqlrepl_position"))
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
    cluster = Cluster(tmp)
    try:
        leader = cluster.leader(db)
        files = [tmp / f"{name}-f1.db", tmp / f"{name}-f2.db"]
        followers = [cluster.follower(f, leader) for f in files]
        archive_dir = tmp / f"{name}-archive"
        archive = cluster.archive(archive_dir, leader)
        with Peaks(cluster.daemons) as peaks:
            commit(db, rows, size)
            committed = time.perf_counter()
            head = position(db)
            late = cluster.follower(tmp / f"{name}-late.db", leader, ready=False)
            wait_until(lambda: all(position(f) >= head for f in files), "followers", 7200)
            reached = time.perf_counter() - committed
            wait_until(lambda: position(tmp / f"{name}-late.db") >= head, "the late one", 7200)
            wait_until(lambda: (archive.status().get("seq") or -1) >= head, "archive", 7200)
        archive.stop()
        want = digest(db)
        equal = all(digest(f) == want for f in [*files, tmp / f"{name}-late.db"])
        restored = tmp / f"{name}-restored.db"
        token = f"{leader.status().get('epoch')}:{head}"
        result = sqlrepl("restore", str(archive_dir), str(restored), "--at", token, timeout=7200)
        restore_equal = result.returncode == 0 and digest(restored) == want
        return {
            "case": name,
            "rows": rows,
            "bytes": rows * size,
            "commit_to_followers_s": round(reached, 3),
            "leader_rss_mib": peaks.mib(leader),
            "follower_rss_mib": [peaks.mib(d) for d in [*followers, late]],
            "archive_rss_mib": peaks.mib(archive),
            "rss_bound_mib": RSS_BOUND_MIB,
            "equal": equal,
            "restore_equal": restore_equal,
            "restore_error": None if result.returncode == 0 else result.stderr.strip(),
            "tracebacks": sum("Traceback" in d.log() for d in cluster.daemons),
        }
    finally:
        cluster.stop()
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
