"""The command line: help everywhere, usage errors, status --json, snapshots for cron."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from sqlrepl.cli import cli

from ..helpers.apps import make_db
from ..helpers.daemons import Cluster, free_port, sqlrepl
from ..helpers.dump import dump

COMMANDS = sorted(cli.commands)  # every command, so a new one without help fails here


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    """Every command documents itself under --help."""
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 4


@pytest.mark.parametrize(
    "args",
    [
        ["leader"],
        ["leader", "/nonexistent.db"],
        ["follower", "x.db"],
        ["follower", "x.db", "--leader", "http://h:1", "--listen", "nohostport"],
        ["status"],
        ["snapshot", "only-source"],
        ["bogus"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str]) -> None:
    """Bad command lines exit 2 with a usage message."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output


def test_status_json_shape(tmp_path: Path, cluster: Cluster) -> None:
    """status --json: one object per URL with the pinned keys; exit 1 if any is unreachable."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(x)")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "r.db", leader)
    cluster.wait_caught_up(db, follower)
    ok = sqlrepl("status", "--json", leader.url, follower.url)
    assert ok.returncode == 0, ok.stderr
    nodes = json.loads(ok.stdout)
    assert [n["role"] for n in nodes] == ["leader", "follower"]
    for n in nodes:
        assert {"url", "ok", "role", "epoch", "seq", "lag"} <= n.keys()
        assert n["ok"] is True and isinstance(n["epoch"], int) and isinstance(n["seq"], int)
    assert set(nodes[1]["lag"]) == {"changes", "seconds"}
    dead = f"http://127.0.0.1:{free_port()}"
    bad = sqlrepl("status", "--json", leader.url, dead)
    assert bad.returncode == 1
    unreachable = json.loads(bad.stdout)[1]
    assert unreachable["url"] == dead and unreachable["ok"] is False
    assert unreachable["role"] is None and "unreachable" in unreachable["error"]
    table = sqlrepl("status", leader.url, follower.url)
    assert table.returncode == 0 and "follower" in table.stdout


def test_snapshot_of_file_and_url(tmp_path: Path, cluster: Cluster) -> None:
    """snapshot writes a verified copy with its position, from a file or a node, and prunes."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(x)")
    leader = cluster.leader(db)
    sqlite3.connect(db).execute("INSERT INTO t VALUES(1)").connection.commit()
    out = tmp_path / "snap.db"
    by_file = sqlrepl("snapshot", "--json", str(db), str(out))
    assert by_file.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout)["path"] == str(out)
    assert dump(out) == dump(db)
    backups = tmp_path / "backups"
    backups.mkdir()
    for _ in range(2):
        by_url = sqlrepl("snapshot", "--json", "--keep", "1", leader.url, str(backups))
        assert by_url.returncode == 0, by_url.stderr
    written = json.loads(by_url.stdout)
    assert written["seq"] >= 1 and written["epoch"] == 1
    assert [p.name for p in backups.iterdir()] == [Path(written["path"]).name]
    assert dump(written["path"]) == dump(db)


@pytest.fixture
def broken_peer() -> Iterator[str]:
    """A server that answers /snapshot with a chunk that does not match its checksum."""

    async def snapshot(request: web.Request) -> web.Response:
        page = b"SQLite format 3\x00" + b"\x00" * 4080
        return web.Response(
            body=page + b"\x00" * 32,
            headers={
                "X-Sqlrepl-Epoch": "1",
                "X-Sqlrepl-Seq": "5",
                "X-Sqlrepl-Image": "abc",
                "X-Sqlrepl-Image-Size": str(len(page)),
                "X-Sqlrepl-Offset": "0",
                "X-Sqlrepl-Chunk": str(1 << 20),
                "X-Sqlrepl-Meta": '{"cluster": "c", "role": "leader"}',
            },
        )

    import asyncio

    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/snapshot", snapshot)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


def test_corrupt_snapshot_leaves_nothing(tmp_path: Path, broken_peer: str) -> None:
    """A snapshot that fails its checksum exits 1 and leaves no file, old DEST kept."""
    dest = tmp_path / "keep.db"
    dest.write_bytes(b"yesterday's backup")
    result = sqlrepl("snapshot", broken_peer, str(dest))
    assert result.returncode == 1 and "corrupt" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr  # one line, no traceback
    assert dest.read_bytes() == b"yesterday's backup"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.db"]


def test_snapshot_of_plain_file_fails_cleanly(tmp_path: Path) -> None:
    """A SOURCE that sqlrepl does not manage gives a clear error and no file."""
    plain = make_db(tmp_path / "plain.db", "CREATE TABLE t(x)")
    result = sqlrepl("snapshot", str(plain), str(tmp_path / "out.db"))
    assert result.returncode == 1 and "not managed by sqlrepl" in result.stderr
    assert not (tmp_path / "out.db").exists()


def test_demo_runs_from_any_directory_and_exits_zero(tmp_path: Path) -> None:
    """The installed `sqlrepl demo`, started in an unrelated directory, runs a leader, two
    followers and a writer on its own sample database, and checks they agree."""
    tool = Path(sys.executable).parent / "sqlrepl"
    result = subprocess.run(
        [str(tool), "demo", "--duration", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("identical to") == 2
    assert list(tmp_path.iterdir()) == []  # nothing left in the caller's directory


def test_status_table_tells_a_lapsed_lease_from_an_open_gate() -> None:
    """The table shows the file's real gate, and says when the lease behind it lapsed."""
    from rich.console import Console

    from sqlrepl import render

    def writes(**leader: object) -> str:
        node = {"ok": True, "url": "http://l:1", "role": "leader", "epoch": 1, "seq": 5}
        console = Console(width=200, record=True)
        console.print(render.status_table([{**node, **leader}]))
        return console.export_text()

    assert "open, lease lapsed" in writes(gate="open", lease_valid=False)
    assert "open, lease lapsed" not in writes(gate="open", lease_valid=True)
    assert "closed" in writes(gate="closed", lease_valid=False)
