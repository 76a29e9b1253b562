"""A real etcd server for coordination tests, on free loopback ports, stopped by its pid."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from .daemons import free_port, wait_until


class EtcdServer:
    def __init__(self, tmp: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.binary = shutil.which("etcd")
        assert self.binary, "etcd is not installed: run ./scripts/test.sh (it installs etcd-server)"
        self.data = tmp / "etcd-data"
        self.client_port, self.peer_port = free_port(), free_port()
        self.log = tmp / "etcd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def coordinator(self, name: str = "test") -> str:
        return f"etcd://{self.host}:{self.client_port}/{name}"

    name = "n1"

    def start(self, initial: str | None = None, wait: bool = True) -> EtcdServer:
        """Start this member (alone, or in the cluster `initial` names)."""
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.data.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--name", self.name,
                    "--data-dir", str(self.data),
                    "--listen-client-urls", self.url,
                    "--advertise-client-urls", self.url,
                    "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial or f"{self.name}={peer}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if wait:
            wait_until(self._healthy, "etcd to answer")
        return self

    def get(self, key: str) -> Any:
        """The JSON value at `key` (None: no such key), read straight from etcd."""
        import etcd3gw

        found = etcd3gw.client(host=self.host, port=self.client_port, timeout=5).get(key)
        return json.loads(found[0]) if found else None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                return b"true" in r.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EtcdCluster:
    """Three etcd members on loopback, for faults inside etcd itself (losing its raft
    leader). Each member is stopped by its pid."""

    def __init__(self, tmp: Path) -> None:
        self.members = [EtcdServer(tmp / f"etcd{i}") for i in range(3)]
        for i, m in enumerate(self.members):
            m.name = f"m{i}"

    def coordinator(self, name: str = "test") -> str:
        hosts = ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)
        return f"etcd://{hosts}/{name}"

    def start(self) -> EtcdCluster:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for m in self.members:
            m.start(initial=initial, wait=False)
        for m in self.members:
            wait_until(m._healthy, f"etcd member {m.name} to answer")
        return self

    def raft_leader(self) -> EtcdServer | None:
        """The member that is etcd's raft leader now (None: an election is under way)."""
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            request = urllib.request.Request(m.url + "/v3/maintenance/status", data=b"{}")
            try:
                with urllib.request.urlopen(request, timeout=2) as r:
                    status = json.load(r)
            except OSError:
                continue
            if status.get("leader") == status["header"]["member_id"]:
                return m
        return None

    def stop(self) -> None:
        for m in self.members:
            m.stop()
