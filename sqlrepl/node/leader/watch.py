"""Waking the leader on commits: file events delivered to the event loop.

On Linux the loop reads inotify itself (no thread; every event pending in one read()
sets `dirty` once): the per-commit cost apps pay for running the daemon beside them is
a few microseconds. Elsewhere watchdog delivers the events from its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
import sys
from pathlib import Path
from typing import Any

#: inotify event masks (linux/inotify.h).
IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name)


class DatabaseWatcher:
    """Sets `dirty` whenever the database file or its WAL is written."""

    def __init__(self, db: Path) -> None:
        self.db = db.resolve()
        self.dirty = asyncio.Event()
        self.names = {self.db.name, self.db.name + "-wal", self.db.name + "-journal"}
        self._fd: int | None = None
        self._armed = False
        self._observer: Any = None

    def start(self) -> None:
        if sys.platform.startswith("linux") and self._start_inotify():
            return
        self._start_watchdog()

    def _start_inotify(self) -> bool:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return False
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(self.db.parent), mask) < 0:
            os.close(fd)
            return False
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._read)
        self._armed = True
        return True

    def _read(self) -> None:
        """A write to the database: set `dirty` and stop reading until `rearm` (events
        queue in the kernel meanwhile: a stream of commits costs one wake-up per look)."""
        if self._matches(self._drain()):
            self.dirty.set()
            assert self._fd is not None
            asyncio.get_running_loop().remove_reader(self._fd)
            self._armed = False

    def rearm(self) -> None:
        """Before a look: forget the writes it will see, and wake on the next one."""
        if self._fd is not None and not self._armed:
            self._drain()
            asyncio.get_running_loop().add_reader(self._fd, self._read)
            self._armed = True

    def _drain(self) -> bytes:
        assert self._fd is not None
        out = b""
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return out
            if not data:
                return out
            out += data

    def _matches(self, data: bytes) -> bool:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _wd, _mask, _cookie, size = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + size].rstrip(b"\0")
            offset += _EVENT.size + size
            if os.fsdecode(name) in self.names:
                return True
        return False

    def _start_watchdog(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop, dirty, names = asyncio.get_running_loop(), self.dirty, self.names

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = event.src_path
                name = Path(path if isinstance(path, str) else path.decode()).name
                if not dirty.is_set() and name in names:
                    loop.call_soon_threadsafe(dirty.set)

        self._observer = Observer()
        self._observer.schedule(Handler(), str(self.db.parent), recursive=False)
        self._observer.start()

    def stop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                if self._armed:
                    asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
