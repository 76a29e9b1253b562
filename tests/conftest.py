from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers.daemons import Cluster
from .helpers.disks import Tmpfs
from .helpers.etcd import EtcdServer
from .helpers.replica import Replica

#: Each directory of tests is a layer, marked by its name: `pytest -m "unit or node"`
#: (scripts/test.sh --quick) runs the fast ones in process; e2e and chaos start daemons.
LAYERS = ("unit", "node", "e2e", "chaos")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    r = Replica(tmp_path)
    yield r
    r.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tmpfs(tmp_path: Path, cluster: Cluster) -> Iterator[Tmpfs]:
    """A 16 MiB tmpfs, unmounted at the end whatever happened (daemons stopped first)."""
    mount = Tmpfs(tmp_path / "small", "16m")
    try:
        yield mount
    finally:
        cluster.stop()  # nothing may hold the mount open
        mount.unmount()
