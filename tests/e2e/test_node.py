"""`sqlrepl node --config FILE`: one command per host whose role follows the cluster, and
`sqlrepl config check` (real daemons, real files)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from ..helpers.apps import app_db, values
from ..helpers.daemons import Cluster, Daemon, free_port, insert, sqlrepl, wait_until


def write_config(path: Path, db: Path, port: int, members: list[int], **extra: object) -> Path:
    lines = [
        f'db = "{db}"',
        f'listen = "127.0.0.1:{port}"',
        "members = [" + ", ".join(f'"http://127.0.0.1:{p}"' for p in members) + "]",
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Hosts:
    """Three hosts, each running the same `sqlrepl node --config` command every time."""

    def __init__(self, tmp: Path, cluster: Cluster) -> None:
        self.ports = [free_port() for _ in range(3)]
        self.files = [tmp / f"h{i}.db" for i in range(3)]
        self.daemons = []
        for i, port in enumerate(self.ports):
            others = [p for p in self.ports if p != port]
            conf = write_config(tmp / f"h{i}.toml", self.files[i], port, others)
            daemon = Daemon(tmp, f"host{i}", ["node", "--config", str(conf)], port)
            cluster.daemons.append(daemon)
            self.daemons.append(daemon)

    def roles(self) -> list[str | None]:
        return [d.role() for d in self.daemons]


def test_the_same_command_on_every_host_stays_right_through_role_changes(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Host 0 holds the app's plain file, hosts 1 and 2 nothing: started (followers
    first, waiting for a leader), host 0 leads and the others bootstrap. Through a
    switchover, a stop and restart of every host, and a SIGTERM of the leader, the very
    same command on each host keeps one leader (the one the cluster's state names) and
    every write."""
    hosts = Hosts(tmp_path, cluster)
    app_db(hosts.files[0])
    hosts.daemons[1].start(ready=False)
    hosts.daemons[2].start(ready=False)
    hosts.daemons[0].start()
    for d in hosts.daemons[1:]:
        d.wait_ready()
    assert hosts.roles() == ["leader", "follower", "follower"]
    insert(hosts.files[0], "before")
    moved = sqlrepl("switchover", "--to", hosts.daemons[1].url)
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: hosts.roles() == ["follower", "leader", "follower"], "the switchover")
    insert(hosts.files[1], "after switchover")
    for d in hosts.daemons:  # every host restarted with its one command
        d.stop()
    for d in hosts.daemons:
        d.start(ready=False)
    for d in hosts.daemons:
        d.wait_ready()
    # Stopped in turn, each leader handed over to the next: host 2 led last, and leads.
    wait_until(lambda: hosts.roles() == ["follower", "follower", "leader"], "the last leader")
    leader = hosts.daemons[2]
    cluster.wait_caught_up(hosts.files[2], *hosts.daemons[:2])  # someone to hand over to
    assert leader.proc is not None
    leader.proc.send_signal(signal.SIGTERM)  # a planned restart: handover
    leader.proc.wait(15)
    wait_until(lambda: hosts.roles().count("leader") == 1, "a new leader")
    leader.start()
    wait_until(lambda: sorted(map(str, hosts.roles())) == ["follower", "follower", "leader"], "3")
    new = hosts.daemons[hosts.roles().index("leader")]
    insert(hosts.files[hosts.daemons.index(new)], "at the end")
    for d in hosts.daemons:
        if d is not new:
            wait_until(
                lambda d=d: "at the end" in values(hosts.files[hosts.daemons.index(d)]),
                "every host to have every write",
            )
    assert {"before", "after switchover", "at the end"} <= values(hosts.files[0])


def test_config_check_names_the_key_and_the_file(tmp_path: Path) -> None:
    """Unknown keys and bad values name the key and where they came from; environment
    variables override the file; `node` refuses bad flags as usage errors (exit 2)."""
    good = write_config(tmp_path / "good.toml", tmp_path / "a.db", 7300, [7301], ttl=5)
    shown = sqlrepl("config", "check", str(good), "--json", env={"SQLREPL_TTL": "7"})
    assert shown.returncode == 0, shown.stderr
    effective = json.loads(shown.stdout)
    assert effective["ttl"] == {"value": 7, "from": "the environment"}
    assert effective["db"]["from"] == str(good)
    cases = {
        "bogus = 1": "unknown key 'bogus'",
        "ttl = -5": "ttl in",
        'listen = "nowhere"': "listen in",
        'members = ["10.0.0.1:7300"]': "members in",
        'log_format = "xml"': "log_format in",
        "ttl = [": "not valid TOML",
    }
    for line, said in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(f'db = "{tmp_path / "a.db"}"\n{line}\n')
        result = sqlrepl("config", "check", str(bad))
        assert result.returncode == 1, (line, result.stderr)
        assert said in result.stderr and str(bad) in result.stderr or "TOML" in said, result.stderr
        assert "Traceback" not in result.stderr
    usage = sqlrepl("node", "--config", str(good), "--ttl", "-5")
    assert usage.returncode == 2 and "--ttl" in usage.stderr, usage.stderr
    missing = sqlrepl("config", "check", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_json_logs_say_what_happened_one_object_per_line(tmp_path: Path, cluster: Cluster) -> None:
    """--log-format json: every line of a leader's and a follower's log is one JSON
    object with time, level, node, role, epoch and event; role changes are in it."""
    db = app_db(tmp_path / "a.db")
    port, fport = free_port(), free_port()
    leader = Daemon(
        tmp_path,
        "jleader",
        ["--log-format", "json", "leader", str(db), "--listen", f"127.0.0.1:{port}"],
        port,
    )
    cluster.daemons.append(leader)
    leader.start()
    follower = Daemon(
        tmp_path,
        "jfollower",
        [
            "--log-format",
            "json",
            "follower",
            str(tmp_path / "b.db"),
            "--leader",
            leader.url,
            "--listen",
            f"127.0.0.1:{fport}",
        ],
        fport,
    )
    cluster.daemons.append(follower)
    follower.start()
    moved = sqlrepl("switchover", "--to", follower.url)
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: follower.role() == "leader", "the switchover")
    leader.stop()
    follower.stop()
    for daemon in (leader, follower):
        entries = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
        assert entries, daemon.name
        for entry in entries:
            assert {"time", "level", "node", "role", "epoch", "event"} <= set(entry), entry
            if entry["logger"] in ("sqlrepl.leader", "sqlrepl.follower"):  # inside a role
                assert entry["role"] and entry["node"], entry
        assert any("switchover" in e["event"] for e in entries)
    roles = {e["role"] for e in (json.loads(x) for x in follower.log().splitlines() if x)}
    assert roles == {"follower", "leader"}
