"""The coordinator interface: the same contract against every backend (etcd real)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from sqlrepl.coord import Coordinator, from_url
from sqlrepl.errors import ConfigError

from ..helpers.etcd import EtcdServer

names = (f"contract{i}" for i in itertools.count())


@pytest.fixture(params=["static", "etcd"])
def coord(request: pytest.FixtureRequest) -> Iterator[Coordinator]:
    if request.param == "static":
        yield from_url(None)
        return
    server: EtcdServer = request.getfixturevalue("etcd")
    c = from_url(server.coordinator(next(names)), 4)
    try:
        yield c
    finally:
        c.release()


def info(node: str) -> dict[str, str]:
    return {"url": f"http://{node}:1", "node": node, "cluster": "c1"}


def test_contract_acquire_renew_release(coord: Coordinator) -> None:
    """Leadership is granted above the floor, held, renewed, confirmed, and given back."""
    coord.check_config(None)
    coord.check_config("c1")
    coord.check_config("c1")
    assert coord.leader() is None
    epoch = coord.acquire(info("a"), 7)
    assert epoch is not None and epoch > 7
    assert coord.holds_lease() and not coord.lease_may_have_expired()
    assert coord.renew()
    holder = coord.leader()
    assert holder is not None
    assert (holder["url"], holder["epoch"]) == ("http://a:1", epoch)
    assert coord.confirm("http://a:1", epoch)
    coord.release()
    assert coord.leader() is None
    again = coord.acquire(info("a"), epoch)
    assert again is not None and again > epoch


def test_contract_describes_itself(coord: Coordinator) -> None:
    """A backend names itself and its HA cycle; only an automatic one runs the HA loop."""
    assert coord.name in ("static", "etcd")
    assert coord.loop_wait > 0
    assert coord.automatic == (coord.name == "etcd")
    assert isinstance(coord.members(), list)


def test_etcd_one_holder_at_a_time(etcd: EtcdServer) -> None:
    """While one node holds the key nobody else gets it, and etcd confirms only the holder."""
    name = next(names)
    a, b = from_url(etcd.coordinator(name), 4), from_url(etcd.coordinator(name), 4)
    epoch = a.acquire(info("a"), 0)
    assert epoch is not None
    assert b.acquire(info("b"), 0) is None and not b.holds_lease()
    assert b.confirm("http://a:1", epoch) and not b.confirm("http://b:1", epoch)
    b.publish("b", {"url": "http://b:1", "node": "b", "seq": 5})
    assert {"url": "http://b:1", "node": "b", "seq": 5} in a.members()
    a.release()
    assert b.acquire(info("b"), epoch) is not None
    b.release()


def test_etcd_ttl_must_match_the_cluster(etcd: EtcdServer) -> None:
    """The first node records the TTL; a node with another one is refused."""
    name = next(names)
    from_url(etcd.coordinator(name), 4).check_config(None)
    with pytest.raises(ConfigError, match="differs"):
        from_url(etcd.coordinator(name), 5).check_config(None)


@pytest.mark.parametrize(
    ("url", "ttl", "message"),
    [
        ("zookeeper://h:1/x", 10, "unknown coordinator"),
        ("etcd://127.0.0.1:2379", 10, "is not etcd://"),
        ("etcd://127.0.0.1:x/c", 10, "is not HOST:PORT"),
        ("etcd://127.0.0.1:2379/c", 2, "too short"),
    ],
)
def test_bad_coordinator_urls(url: str, ttl: int, message: str) -> None:
    """A bad URL or TTL is refused before anything connects."""
    with pytest.raises(ConfigError, match=message):
        from_url(url, ttl)


def test_contract_the_published_head_outlives_its_leader(coord: Coordinator) -> None:
    """The head a leader publishes is read back, replaced by the next one, and kept after
    the leader gives its lease up (candidates measure their lag against it)."""
    coord.check_config("c1")
    assert coord.head() is None
    assert coord.acquire(info("a"), 0) is not None
    coord.publish_head({"epoch": 3, "seq": 10, "url": "http://a:1"})
    coord.publish_head({"epoch": 3, "seq": 12, "url": "http://a:1"})
    coord.release()
    assert coord.head() == {"epoch": 3, "seq": 12, "url": "http://a:1"}
