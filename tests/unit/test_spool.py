"""The batch spool: the sender follows the builder byte for byte, in memory and on disk."""

from __future__ import annotations

import asyncio
import os
import threading

from sqlrepl.node.spool import Spool


async def _follow(spool: Spool) -> bytes:
    got = bytearray()
    while True:
        finished = spool.finished
        if block := spool.read(len(got), 50_000):
            got += block
        elif finished:
            return bytes(got)
        else:
            await spool.changed()


def test_reader_follows_writer_across_the_move_to_disk() -> None:
    """Everything written arrives once and in order, before and after the spool spills."""
    blocks = [os.urandom(n) for n in [10, 70_000, 3, 300_000, 1] * 40]

    async def run() -> bytes:
        spool = Spool(asyncio.get_running_loop(), memory=1 << 20)

        def build() -> None:
            for block in blocks:
                spool.write(block)
            spool.finish()

        writer = threading.Thread(target=build)
        writer.start()
        try:
            return await _follow(spool)
        finally:
            writer.join()
            spool.close()

    assert asyncio.run(run()) == b"".join(blocks)


def test_small_spool_stays_in_memory() -> None:
    """A batch below the memory limit never touches a file."""

    async def run() -> Spool:
        spool = Spool(asyncio.get_running_loop(), memory=1 << 20)
        spool.write(b"x" * 1000)
        spool.finish()
        return spool

    spool = asyncio.run(run())
    assert spool._file is None and spool.read(0, 10_000) == b"x" * 1000
