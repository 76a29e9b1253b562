"""Waking the leader on commits: file events from watchdog, delivered to the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _Handler(FileSystemEventHandler):
    def __init__(self, names: set[str], loop: asyncio.AbstractEventLoop, dirty: asyncio.Event):
        self.names = names
        self.loop = loop
        self.dirty = dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
        if Path(path).name in self.names:
            self.loop.call_soon_threadsafe(self.dirty.set)


class DatabaseWatcher:
    """Sets `dirty` whenever the database file or its WAL is written."""

    def __init__(self, db: Path) -> None:
        self.db = db.resolve()
        self.dirty = asyncio.Event()
        self._observer = Observer()

    def start(self) -> None:
        names = {self.db.name, self.db.name + "-wal", self.db.name + "-journal"}
        handler = _Handler(names, asyncio.get_running_loop(), self.dirty)
        self._observer.schedule(handler, str(self.db.parent), recursive=False)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
