"""Real sqlrepl daemons as subprocesses, always stopped by pid, and deadline-bound waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqlrepl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run a sqlrepl command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sqlrepl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def http_status(url: str) -> int:
    """The HTTP status `url` answers with."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Daemon:
    def __init__(
        self,
        tmp: Path,
        name: str,
        args: list[str],
        port: int,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ):
        self.name, self.args, self.port, self.env = name, args, port, env
        #: What the command runs under (e.g. `ip netns exec NS`, which execs it: the pid
        #: is still the daemon's).
        self.prefix = prefix or []
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.token = (env or {}).get("SQLREPL_TOKEN")

    def start(self, ready: bool = True) -> Daemon:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "sqlrepl", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        if ready:
            self.wait_ready()
        return self

    def status(self) -> dict[str, Any]:
        return get_json(self.url + "/status", self.token)

    def role(self) -> str | None:
        """The node's role, or None while it does not answer (e.g. between two roles)."""
        try:
            return self.status().get("role")
        except (OSError, urllib.error.URLError):
            return None

    def wait_ready(self) -> None:
        def up() -> bool:
            assert self.proc and self.proc.poll() is None, f"{self.name} exited:\n{self.log()}"
            try:
                return self.status().get("seq") is not None
            except (OSError, urllib.error.URLError):
                return False

        wait_until(up, f"{self.name} ready")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode


def holds(node: Daemon, token: str, timeout: float = 20) -> None:
    """Wait (up to `timeout`) until the follower or archive `node` holds `token`: applied
    it, and for an archive also recorded it (the node's own /wait)."""
    url = f"{node.url}/wait?token={token}&timeout={timeout:g}"
    with urllib.request.urlopen(url, timeout=timeout + 10) as answer:
        assert answer.status == 200


def wait_until(predicate: Any, what: str, deadline: float = DEADLINE) -> None:
    """Wait for `predicate`; a node that cannot be asked yet (it is between two roles, and
    a request that arrived then may be cut) makes it false, not an error."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline}s waiting for {what}")


class Cluster:
    """Starts daemons in `tmp` and stops every one of them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.daemons: list[Daemon] = []

    def leader(
        self,
        db: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        port: int | None = None,
    ) -> Daemon:
        port = port or free_port()
        d = Daemon(
            self.tmp,
            f"leader-{port}",
            ["leader", str(db), "--listen", f"127.0.0.1:{port}", *extra],
            port,
            env,
        )
        self.daemons.append(d)
        return d.start(ready)

    def follower(
        self,
        db: Path,
        leader: Daemon | str,
        *extra: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        port: int | None = None,
    ) -> Daemon:
        port = port or free_port()
        args = [
            "follower",
            str(db),
            "--leader",
            leader if isinstance(leader, str) else leader.url,
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ]
        env = env or (None if isinstance(leader, str) else leader.env)
        d = Daemon(self.tmp, f"follower-{port}", args, port, env)
        self.daemons.append(d)
        return d.start(ready)

    def archive(self, directory: Path, leader: Daemon, *extra: str, ready: bool = True) -> Daemon:
        """`sqlrepl archive` of `leader` into `directory`."""
        port = free_port()
        args = ["archive", str(directory), "--leader", leader.url]
        d = Daemon(
            self.tmp,
            f"archive-{port}",
            [*args, "--listen", f"127.0.0.1:{port}", *extra],
            port,
            leader.env,
        )
        self.daemons.append(d)
        return d.start(ready)

    def stop(self) -> None:
        for d in self.daemons:
            d.stop()

    @staticmethod
    def wait_caught_up(leader_db: Path, *followers: Daemon, deadline: float = DEADLINE) -> int:
        """Wait until every follower applied the newest change in the leader's log, on the
        leader's epoch, and streams (not resyncing)."""
        from .dump import epoch, log_head

        target, current = log_head(leader_db), epoch(leader_db)

        def done() -> bool:
            for f in followers:
                s = f.status()
                if (s.get("seq") or -1) < target or s.get("epoch") != current:
                    return False
                if s.get("state") != "streaming":
                    return False
            return True

        wait_until(done, f"followers to reach seq {target}", deadline)
        return target


class Background:
    """A loop in a thread, from `with` to the end of the block: `step()` every `every` s."""

    every = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def step(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            time.sleep(self.every)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Sampler(Background):
    """Every 100 ms, how many nodes say they lead with the write gate open and a lease they
    believe valid (a leader whose lease may have lapsed ships nothing while its HA cycle
    closes the gate; status reports that gate as it really is, with `lease_valid` false)."""

    def __init__(self, nodes: list[Daemon], strict: bool = False) -> None:
        super().__init__()
        self.nodes = nodes
        self.worst = 0
        #: Count every leader whose status says its gate is open, whatever its lease.
        self.strict = strict
        self.samples = 0

    def step(self) -> None:
        count = 0
        for node in list(self.nodes):
            try:
                status = get_json(node.url + "/status")
            except (OSError, urllib.error.URLError):
                continue
            count += (
                status.get("role") == "leader"
                and status.get("gate") == "open"
                and (self.strict or status.get("lease_valid") is not False)
            )
        self.worst = max(self.worst, count)
        self.samples += 1

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        assert self.worst <= 1, "two nodes led with their write gates open at once"


class WriteSampler(Background):
    """Every 50 ms, attempt an app write on the file of every node that is up (answers
    its status). When two files accept, both are tried again at once: still two is two
    nodes taking app writes at the same time. Every probe that committed is remembered,
    to be accounted for at the end like any app write."""

    every = 0.05

    def __init__(self, nodes: list[Daemon], files: list[Path]) -> None:
        super().__init__()
        self.nodes = list(zip(nodes, files, strict=True))
        self.acked: list[str] = []
        #: The file of every accepted attempt, in order.
        self.accepted_on: list[Path] = []
        self.worst = 0
        self.count = 0
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def _accepts(self, db: Path) -> bool:
        self.count += 1
        value = f"probe-{self.count}"
        try:
            insert(db, value, timeout=2)
        except sqlite3.DatabaseError:
            return False
        self.acked.append(value)
        self.accepted_on.append(db)
        return True

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No attempt during the block (none is under way when it starts)."""
        with self._lock:
            yield

    def step(self) -> None:
        with self._lock:
            self._attempt()

    def _attempt(self) -> None:
        up = [db for node, db in list(self.nodes) if db.exists() and node.role() is not None]
        accepting = [db for db in up if self._accepts(db)]
        if len(accepting) > 1:
            again = [db for db in accepting if self._accepts(db)]
            self.worst = max(self.worst, len(again))
            if len(again) > 1:
                self.seen.append(f"{time.strftime('%H:%M:%S')}: {[d.name for d in again]}")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        assert self.worst <= 1, f"two nodes accepted app writes at the same time: {self.seen}"


def insert(db: Path, value: Any, timeout: float = 10) -> int:
    """One app write, in its own transaction, with the stdlib driver."""
    conn = sqlite3.connect(db, timeout=timeout)
    try:
        cur = conn.execute("INSERT INTO t(v) VALUES(?)", (value,))
        conn.commit()
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


class Writer(Background):
    """An app inserting rows into t(v), one transaction each, into whichever file is the
    leader's; remembers every insert that committed (acknowledged) and every refusal."""

    every = 0.002

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.acked: list[str] = []
        self.refused: list[str] = []

    def step(self) -> None:
        value = f"w{len(self.acked) + len(self.refused) + 1}"
        try:
            insert(self.db, value)
            self.acked.append(value)
        except sqlite3.DatabaseError as exc:
            self.refused.append(str(exc))
