"""Prometheus metrics (`GET /metrics`, the official prometheus-client).

Counters and histograms live for the process (they survive role changes, as Prometheus
expects of a counter); what describes the node now — role, epoch, seq, lag, gate, lease,
followers — is read from the current role at scrape time.

    sqlrepl_role{role}                       1 for the role this node has now
    sqlrepl_epoch, sqlrepl_seq               position (leader: log head; follower: applied)
    sqlrepl_lag_changes, sqlrepl_lag_seconds                    follower
    sqlrepl_follower_lag_changes{follower}, …_seconds{follower} leader, per follower
    sqlrepl_followers_connected, sqlrepl_write_gate_open, sqlrepl_lease_held
    sqlrepl_batches_shipped_total, sqlrepl_changes_shipped_total, sqlrepl_sent_bytes_total
    sqlrepl_batches_applied_total, sqlrepl_rows_applied_total, sqlrepl_received_bytes_total
    sqlrepl_batch_build_seconds, sqlrepl_batch_apply_seconds    histograms
    sqlrepl_snapshots_total{direction}, sqlrepl_snapshot_seconds{direction}
    sqlrepl_replication_errors_total{kind}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

disable_created_metrics()  # no `_created` series beside every counter
REGISTRY = CollectorRegistry(auto_describe=True)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

BATCHES_SHIPPED = Counter(
    "sqlrepl_batches_shipped", "Batches the leader sent to followers.", registry=REGISTRY
)
CHANGES_SHIPPED = Counter(
    "sqlrepl_changes_shipped", "Log entries the leader sent to followers.", registry=REGISTRY
)
SENT_BYTES = Counter(
    "sqlrepl_sent_bytes", "Bytes of batches and snapshots sent.", registry=REGISTRY
)
BATCHES_APPLIED = Counter(
    "sqlrepl_batches_applied", "Batches a follower applied.", registry=REGISTRY
)
ROWS_APPLIED = Counter("sqlrepl_rows_applied", "Rows a follower applied.", registry=REGISTRY)
RECEIVED_BYTES = Counter(
    "sqlrepl_received_bytes", "Bytes of batches and snapshots received.", registry=REGISTRY
)
BUILD_SECONDS = Histogram(
    "sqlrepl_batch_build_seconds", "Time to build a batch.", buckets=_BUCKETS, registry=REGISTRY
)
APPLY_SECONDS = Histogram(
    "sqlrepl_batch_apply_seconds", "Time to apply a batch.", buckets=_BUCKETS, registry=REGISTRY
)
SNAPSHOTS = Counter(
    "sqlrepl_snapshots",
    "Snapshots served (out) or installed (in).",
    ["direction"],
    registry=REGISTRY,
)
SNAPSHOT_SECONDS = Histogram(
    "sqlrepl_snapshot_seconds",
    "Time to serve or install a snapshot.",
    ["direction"],
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
ERRORS = Counter(
    "sqlrepl_replication_errors",
    "Replication failures a follower retried, by kind.",
    ["kind"],
    registry=REGISTRY,
)

#: What the current role says of itself at scrape time: name -> (help, value or
#: {label value: value}, label name).
State = dict[str, tuple[str, Any, str]]


class _Now(Collector):
    """The role now running, described through its `source` when scraped."""

    def __init__(self) -> None:
        self.source: Callable[[], State] = dict

    def serve(self, source: Callable[[], State]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        for name, (text, value, label) in self.source().items():
            if isinstance(value, dict):
                family = GaugeMetricFamily(name, text, labels=[label])
                for key, number in sorted(value.items()):
                    if number is not None:
                        family.add_metric([str(key)], float(number))
            else:
                family = GaugeMetricFamily(name, text)
                if value is not None:
                    family.add_metric([], float(value))
            yield family


NOW = _Now()
REGISTRY.register(NOW)


def serve_role(source: Callable[[], State]) -> None:
    """The role now running describes the node through `source`."""
    NOW.serve(source)


async def handler(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def roles(current: str) -> dict[str, int]:
    return {"leader": int(current == "leader"), "follower": int(current == "follower")}


def describe(
    role: str,
    epoch: int | None,
    seq: int | None,
    gate_open: bool,
    lease: bool,
    extra: State,
) -> State:
    """The gauges every role reports, and its own (`extra`)."""
    return {
        "sqlrepl_role": ("1 for the role this node has now.", roles(role), "role"),
        "sqlrepl_epoch": ("The epoch this node is on.", epoch, ""),
        "sqlrepl_seq": ("Newest change held (leader: log head; follower: applied).", seq, ""),
        "sqlrepl_write_gate_open": ("1 while app writes go through.", int(gate_open), ""),
        "sqlrepl_lease_held": ("1 while this node holds the leader lease.", int(lease), ""),
        **extra,
    }
