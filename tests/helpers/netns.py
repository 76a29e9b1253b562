"""Network namespaces for partition tests: one per node, on a bridge of their own, with
links cut by blackhole routes inside a namespace (no firewall needed). The test process
stays in the root namespace and reaches every node over the bridge; etcd listens on a
second address of the bridge, so cutting a node from etcd leaves it reachable.

Every name and address is drawn anew per Net, and everything is removed on close, also
when the test fails (`with Net() as net:`)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from .daemons import Daemon, free_port

#: The token of every daemon in a namespace.
TOKEN = "netns-secret"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Net:
    def __init__(self) -> None:
        # Names and addresses of their own per Net (two in one test process must not meet
        # what the other left behind).
        self.tag = secrets.token_hex(3)
        self.bridge = f"sqbr{self.tag}"
        self.prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
        #: The bridge's own addresses: the test process, and etcd.
        self.host, self.etcd_host = f"{self.prefix}.1", f"{self.prefix}.2"
        self.nodes: dict[str, str] = {}  # namespace -> address

    def __enter__(self) -> Net:
        _ip("link", "add", self.bridge, "type", "bridge")
        # A fixed MAC: otherwise the bridge takes the lowest of its ports' and changes it
        # when a node's port is added, and nodes keep sending to the old one (their ARP
        # entry for etcd's address): etcd unreachable for many seconds, by chance.
        _ip(
            "link",
            "set",
            self.bridge,
            "address",
            "02:" + ":".join(self.tag[i : i + 2] for i in (0, 2, 4)) + ":00:01",
        )
        _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
        _ip("addr", "add", f"{self.etcd_host}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self.nodes:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10)

    def add(self, name: str) -> str:
        """A namespace for node `name`; its address."""
        ns = f"sq{self.tag}{name}"
        address = f"{self.prefix}.{11 + len(self.nodes)}"
        veth = f"sqv{self.tag}{len(self.nodes)}"
        self.nodes[ns] = address
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def cut(self, ns: str, *addresses: str) -> None:
        """Nothing passes between the node in `ns` and `addresses` (both ways: its answers
        cannot leave either)."""
        for address in addresses:
            _ip("-n", ns, "route", "add", "blackhole", f"{address}/32")

    def heal(self, ns: str, *addresses: str) -> None:
        for address in addresses:
            _ip("-n", ns, "route", "del", "blackhole", f"{address}/32")

    def daemon(self, tmp: Path, ns: str, name: str, args: list[str]) -> Daemon:
        """A sqlrepl daemon (not started) run in `ns`, listening on its address (with a
        token: only loopback addresses may serve without one)."""
        port = free_port()
        address = self.nodes[ns]
        listen = ["--listen", f"{address}:{port}"]
        env = {"SQLREPL_TOKEN": TOKEN}
        d = Daemon(tmp, name, [*args, *listen], port, env, ["ip", "netns", "exec", ns])
        d.url = f"http://{address}:{port}"
        return d
