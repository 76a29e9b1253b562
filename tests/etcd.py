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
    def __init__(self, tmp: Path) -> None:
        self.binary = shutil.which("etcd")
        assert self.binary, "etcd is not installed: run ./scripts/test.sh (it installs etcd-server)"
        self.data = tmp / "etcd-data"
        self.client_port, self.peer_port = free_port(), free_port()
        self.log = tmp / "etcd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def coordinator(self, name: str = "test") -> str:
        return f"etcd://127.0.0.1:{self.client_port}/{name}"

    def start(self) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--name", "n1",
                    "--data-dir", str(self.data),
                    "--listen-client-urls", self.url,
                    "--advertise-client-urls", self.url,
                    "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"n1={peer}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._healthy, "etcd to answer")
        return self

    def get(self, key: str) -> Any:
        """The JSON value at `key` (None: no such key), read straight from etcd."""
        import etcd3gw

        found = etcd3gw.client(host="127.0.0.1", port=self.client_port, timeout=5).get(key)
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
