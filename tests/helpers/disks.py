"""Small tmpfs mounts made for a test (root only; the test is skipped otherwise)."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest


class Tmpfs:
    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        #: Bind mounts laid over the tmpfs (each unmounted at the end).
        self.layers = 0
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")

    def read_only(self) -> None:
        """Make the mount refuse writes through new opens (a read-only bind mount over
        it; files already open stay writable, as on a disk that fails under a daemon).

        The read-only layer is made beside the path, where nothing opens files, and only
        then laid over it: remounting a layer in place fails for as long as anything holds
        a file open for writing through it (a daemon's new connection), for good."""
        path, staging = str(self.path), self.path.with_name(f".{self.path.name}-ro")
        staging.mkdir()
        try:
            subprocess.run(["mount", "--bind", path, str(staging)], check=True)
            try:
                remount = ["mount", "-o", "remount,bind,ro", str(staging)]
                subprocess.run(remount, check=True)
                subprocess.run(["mount", "--bind", str(staging), path], check=True)
                self.layers += 1
            finally:
                subprocess.run(["umount", "-l", str(staging)], check=True)
        finally:
            staging.rmdir()

    def writable(self) -> None:
        """Undo `read_only`."""
        if self.layers:
            subprocess.run(["umount", "-l", str(self.path)], check=True)
            self.layers -= 1

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def fill(self) -> Path:
        """Fill every free block; return the filler file."""
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (64 << 10))
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        return filler

    def unmount(self) -> None:
        for _ in range(self.layers + 1):
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
