"""The watchdog's sweep for orphaned reservations runs in a thread, not on the head's event loop: on Redis a
sweep reads every open reservation (tens of thousands of held ones, each minute), and on the loop that held
up every other call of the head as long. The ``Head`` is the real class on an asyncio loop and a SQLite
file, no Ray; the store's sweep is replaced by one that waits for the head to answer a call meanwhile."""

from __future__ import annotations

import asyncio
import threading

from tests.unit.test_head_interleavings import no_ray_started  # noqa: F401
from tests.unit.test_head_orphaned_reservations import sqlite_head

WAIT_S = 2.0  # how long the sweep waits for the call (on the loop, the call could never come meanwhile)


def test_the_head_answers_a_call_while_its_watchdog_sweeps_for_orphaned_reservations(tmp_path, monkeypatch):
    async def main():
        head = await sqlite_head(tmp_path / "s.db")
        answered = threading.Event()
        swept_on: list[int] = []

        def slow_sweep(grace_s):  # as a sweep over many reservations: it returns once the head answered a ping
            swept_on.append(threading.get_ident())
            return ["orphan"] if answered.wait(WAIT_S) else []
        monkeypatch.setattr(head.store, "release_orphaned_reservations", slow_sweep)

        async def ping_meanwhile():
            await asyncio.sleep(0.05)
            await head.ping()
            answered.set()
        head._next_orphan_sweep = 0.0
        await asyncio.gather(head._watch_once(), ping_meanwhile())
        released = head.metrics.registry.get_sample_value("coopsched_orphaned_reservations_released_total")
        return swept_on, threading.get_ident(), released

    swept_on, loop_thread, released = asyncio.run(main())
    assert swept_on and swept_on[0] != loop_thread, "the sweep ran on the event loop's thread"
    assert released == 1  # the ping was answered during the sweep, which then released its orphan
