"""The newcomer trial's failures, through the real CLI: each prints one line (no
traceback) and exits 2 for usage errors, 1 for the rest, and changes nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from ..helpers.apps import app_db
from ..helpers.daemons import Cluster, sqlrepl
from ..helpers.disks import Tmpfs


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1] if lines else ""


def test_bad_input_gets_one_line_and_the_right_exit_code(tmp_path: Path) -> None:
    """A table of what newcomers typed, through the real CLI."""
    db = app_db(tmp_path / "app.db")
    before = db.read_bytes()
    cases = [
        (["status", "127.0.0.1:1"], 2, "is not a node URL"),
        (["promote", "localhost"], 2, "is not a node URL"),
        (["switchover", "--to", "ftp://x:1"], 2, "is not a node URL"),
        (["history", "http://"], 2, "is not a node URL"),
        (["wait", "127.0.0.1:7300", "1:1"], 2, "is not a node URL"),
        (["leader", str(db), "--ttl", "-5"], 2, "--ttl"),
        (["leader", str(db), "--coordinator", "etcd://127.0.0.1:2379"], 2, "CLUSTER"),
        (["follower", str(tmp_path / "f.db"), "--leader", "x", "--ttl", "0"], 2, "--ttl"),
        (["node", "--db", str(db), "--ttl", "-5"], 2, "--ttl"),
        (["snapshot", str(db), str(tmp_path / "nowhere" / "s.db")], 1, "does not exist"),
        (["status", "http://127.0.0.1:1"], 1, "unreachable"),
    ]
    for args, code, said in cases:
        result = sqlrepl(*args)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert said in one_line(result) + result.stdout, (args, result.stderr)
    assert db.read_bytes() == before  # nothing was touched


def test_a_snapshot_to_a_full_or_read_only_disk_leaves_nothing(
    tmp_path: Path, tmpfs: Tmpfs
) -> None:
    """A snapshot that does not fit, and one into a read-only directory: one line, exit
    1, no temp file left behind."""
    db = app_db(tmp_path / "app.db")
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO t(v) VALUES(?)", [("x" * 1000,) for _ in range(20000)])
    conn.commit()
    conn.close()
    full = sqlrepl("snapshot", str(db), str(tmpfs.path / "s.db"))
    assert full.returncode == 1 and "cannot write" in one_line(full), full.stderr
    assert list(tmpfs.path.iterdir()) == []
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs.path)], check=True)
    readonly = sqlrepl("snapshot", str(db), str(tmpfs.path / "s.db"))
    assert readonly.returncode == 1 and "not writable" in one_line(readonly), readonly.stderr


def test_a_database_whose_wal_was_deleted(tmp_path: Path) -> None:
    """Someone deleted app.db-wal while an app had changes in it: snapshot and restore
    of what is left work, or fail with one line; no traceback."""
    db = app_db(tmp_path / "app.db")
    app = sqlite3.connect(db)
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("INSERT INTO t(v) VALUES('only in the wal')")
    app.commit()
    Path(str(db) + "-wal").unlink()
    result = sqlrepl("snapshot", str(db), str(tmp_path / "s.db"))
    app.close()
    assert result.returncode in (0, 1), result.stderr
    one_line(result)


def test_status_watch_refreshes_until_interrupted(tmp_path: Path, cluster: Cluster) -> None:
    """`status --watch` redraws the table until Ctrl-C, then exits 0; with --json it is
    a usage error."""
    leader = cluster.leader(app_db(tmp_path / "app.db"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sqlrepl", "status", "--watch", "--interval", "0.2", leader.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        tables = 0
        while tables < 3:  # into a pipe, each refresh prints one table: wait for three
            line = proc.stdout.readline()
            assert line, (
                f"status --watch ended by itself: {proc.stderr.read() if proc.stderr else ''}"
            )
            tables += "every 0.2s" in line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    both = sqlrepl("status", "--watch", "--json", leader.url)
    assert both.returncode == 2
