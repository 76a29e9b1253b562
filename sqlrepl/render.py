"""Everything sqlrepl prints for people. The only module that imports rich."""

from __future__ import annotations

import datetime
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .core.status import NodeStatus

# Piped output (logs, CI, grep) is not cut to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)  # one line: scripts grep it


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def iso(moment: float | None) -> str:
    """A Unix time as ISO 8601 UTC to the millisecond."""
    if moment is None:
        return "—"
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat(timespec="milliseconds")


def error(message: str) -> None:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False)


def _fmt(value: Any, suffix: str = "") -> str:
    return "—" if value is None else f"{value}{suffix}"


def _host(url: str) -> str:
    return url.split("://", 1)[-1]


def status_table(nodes: list[NodeStatus]) -> Table:
    table = Table(title="sqlrepl cluster")
    table.add_column("node", no_wrap=True)
    columns = ("role", "state", "epoch", "seq", "lag", "lag s", "last contact", "writes")
    for column in (*columns, "promotable"):
        table.add_column(
            column, justify="right" if column in ("epoch", "seq", "lag", "lag s") else "left"
        )
    for n in nodes:
        if not n["ok"]:
            table.add_row(_host(n["url"]), "[red]unreachable[/]", *[""] * len(columns))
            continue
        lag = n.get("lag")
        role = "[bold green]leader[/]" if n["role"] == "leader" else "follower"
        state = n.get("state") or ("serving" if n["role"] == "leader" else "")
        if (got := n.get("snapshot")) and got.get("total"):  # a bootstrap under way
            state += f" {100 * got['done'] // got['total']}% ({got['bytes_per_s'] >> 20} MiB/s)"
        if n.get("error"):
            state = f"[yellow]{state}[/]"
        table.add_row(
            _host(n["url"]),
            role,
            state,
            _fmt(n.get("epoch")),
            _fmt(n.get("seq")),
            _fmt(lag["changes"] if lag else None),
            _fmt(lag["seconds"] if lag else None),
            _fmt(n.get("last_contact"), "s"),
            _writes(n),
            _promotable(n),
        )
    return table


def _writes(n: NodeStatus) -> str:
    if n["role"] != "leader":
        return "refused"
    if n.get("gate") != "open":
        return "[red]closed[/]"
    if n.get("lease_valid") is False:
        return "[yellow]open, lease lapsed[/]"  # closing: an app holds the write lock
    return "[green]open[/]"


def _promotable(n: NodeStatus) -> str:
    if n["role"] != "follower":
        return ""
    return "[green]yes[/]" if n.get("eligible") else f"no: {n.get('why_not')}"


def print_status(nodes: list[NodeStatus]) -> None:
    console.print(status_table(nodes))
    for n in nodes:
        if problem := n.get("problem"):  # a failure that lasts: its cause and how long
            tries, since = (
                problem["tries"],
                time.strftime("%H:%M:%S", time.localtime(problem["since"])),
            )
            line = f"{problem['cause']} ({tries} tries since {since})"
            console.print(f"[red]{n['url']}[/]: {line}", highlight=False)
        elif n.get("error"):
            console.print(f"[yellow]{n['url']}[/]: {n['error']}", highlight=False)


def promoted(result: dict[str, Any]) -> None:
    console.print(
        f"[bold green]{result['url']}[/] leads epoch {result['epoch']} from seq {result['seq']}",
        highlight=False,
    )


def switched(result: dict[str, Any]) -> None:
    console.print(
        f"[bold green]{result['leader']}[/] leads epoch {result['epoch']} from seq "
        f"{result['seq']}; writes were refused for {result['unavailable_s']} s",
        highlight=False,
    )


def history_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="epochs")
    for column in ("epoch", "start seq", "when (UTC)", "why", "node"):
        table.add_column(column, justify="right" if column in ("epoch", "start seq") else "left")
    for h in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(h.get("at") or 0)))
        table.add_row(
            str(h["epoch"]), str(h["start_seq"]), when, str(h.get("why")), str(h.get("url"))
        )
    if not rows:
        console.print("epoch 1 since the cluster began: no promotion yet")
        return
    console.print(table)


def snapshot_written(result: dict[str, Any]) -> None:
    console.print(
        f"Snapshot [bold]{result['path']}[/] written: {result['bytes']:,} bytes, "
        f"position {result['epoch']}/{result['seq']}"
    )
    for p in result["pruned"]:
        console.print(f"  pruned old snapshot {p}")


@contextmanager
def transfer_progress(description: str) -> Iterator[Any]:
    """A progress callback (done, total): a bar on a terminal, nothing otherwise."""
    if not err_console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total or None)


def live_status(fetch: Any, duration: float, caption: Any) -> None:
    """Refresh a status table a few times a second for `duration` seconds."""
    end = time.monotonic() + duration
    with Live(status_table(fetch()), console=console, refresh_per_second=4) as live:
        while time.monotonic() < end:
            table = status_table(fetch())
            table.caption = caption()
            live.update(table)
            time.sleep(0.25)
    console.print()


def settings_table(effective: dict[str, Any], source: Any) -> None:
    """A node's effective settings, each with where its value came from."""
    table = Table(title=f"effective settings ({source})")
    for column in ("key", "value", "from"):
        table.add_column(column)
    for key, item in effective.items():
        table.add_row(key, json.dumps(item["value"]), str(item["from"]))
    console.print(table)


def watch_status(fetch: Any, interval: float) -> None:
    """`status --watch`: the table, refreshed every `interval` seconds until Ctrl-C (on a
    terminal in place; into a pipe, one table after another)."""
    stop = threading.Event()
    # Our own SIGINT handler: asyncio.run (the fetch) then leaves SIGINT alone, so a
    # Ctrl-C that lands during a fetch ends the watch after it, never lost in between.
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())

    def table() -> Table:
        shown = status_table(fetch())
        shown.caption = f"{time.strftime('%H:%M:%S')} — every {interval:g}s, Ctrl-C to stop"
        return shown

    try:
        if not console.is_terminal:
            while not stop.is_set():
                console.print(table())
                console.file.flush()
                stop.wait(interval)
            return
        with Live(table(), console=console, auto_refresh=False) as live:
            while not stop.wait(interval):
                live.update(table(), refresh=True)
        console.print()
    finally:
        signal.signal(signal.SIGINT, previous)
