"""Small tmpfs mounts made for a test (root only; the test is skipped otherwise)."""

from __future__ import annotations

import errno
import subprocess
import time
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
        it; files already open stay writable, as on a disk that fails under a daemon)."""
        path = str(self.path)
        subprocess.run(["mount", "--bind", path, path], check=True)
        self.layers += 1
        # A file opened for writing through the new layer meanwhile makes the remount
        # busy: try again until it goes through.
        for _ in range(100):
            remount = ["mount", "-o", "remount,bind,ro", path]
            if subprocess.run(remount, capture_output=True).returncode == 0:
                return
            time.sleep(0.01)
        raise AssertionError(f"could not make {path} read-only")

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
