"""The head's threads: a call in the reads or submissions group verifies its request on a thread of its own
while the main loop settles reports inside a group commit.

The main loop held the store's lock across ``on_reports`` and took the gate's lock to verify each report;
a reads call with an unknown key took the gate's lock and then (reloading the keys, at most once a second)
the store's: each waited for the other's lock and the head's event loop froze for good. Now the gate
never holds its lock while it reads the store.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time

from scheduler.head import Head
from scheduler.identity import generate_key, public_key_b64, sign_request
from tests.unit.test_head_interleavings import no_ray_started  # noqa: F401

OPERATOR, EXEC, STRANGER = generate_key(), generate_key(), generate_key()
COOP = "coop:a"
_n = itertools.count()


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def do(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)


async def make_head() -> Head:
    head = Head.__new__(Head)
    await Head.__init__(head, store_url=f"memory://threads-{next(_n)}",
                        auth={"mode": "signed", "operator_key": public_key_b64(OPERATOR)})
    head._watchdog = object()
    head.gate.verifier._forgotten_until = 0
    head.core.set_policy({"coop_id": COOP})
    await head.register_executor({"executor_id": "ea", "coop_id": COOP, "region": "r", "node_id": "n1",
                                  "resources": {"cpus": 4}}, public_key=public_key_b64(EXEC),
                                 _request={"signed": sign_request(
                                     OPERATOR, "register_executor",
                                     ({"executor_id": "ea", "coop_id": COOP, "region": "r", "node_id": "n1",
                                       "resources": {"cpus": 4}},), {"public_key": public_key_b64(EXEC)},
                                     now=time.time())})
    return head


def signed_report(i: int) -> dict:
    now = time.time()
    r = {"task_id": f"t{i}", "executor_id": "ea", "coop_id": COOP, "member": "alice", "started_at": now - 1,
         "ended_at": now, "cpu_seconds": 1.0, "outcome": "succeeded", "attempt": 1}
    return {**r, "signed": sign_request(EXEC, "report", (r,), {}, now=now)}


def test_a_read_with_an_unknown_key_while_reports_are_settled_does_not_freeze_the_head():
    th = LoopThread()
    head = th.do(make_head())
    assert head.core.table.spec("ea")
    reports = [signed_report(i) for i in range(200)]
    stop = threading.Event()

    def reader() -> None:  # a ``reads``-group call on its own thread and loop, as Ray runs it
        while not stop.is_set():
            envelope = sign_request(STRANGER, "status", ("t1",), {}, now=time.time())
            asyncio.run(head.status("t1", _request={"signed": envelope}))
            time.sleep(0.01)

    threading.Thread(target=reader, daemon=True).start()
    try:
        deadline = time.monotonic() + 4.0  # the unknown-key reload runs at most once a second: ~4 chances
        while time.monotonic() < deadline:
            try:
                th.do(head.on_reports(reports), timeout=5.0)
            except TimeoutError:
                raise AssertionError("on_reports did not return within 5 s: the head's loop is deadlocked "
                                     "(main loop holds the store lock, waits for gate._lock; the reader holds "
                                     "gate._lock, waits for the store lock)") from None
    finally:
        stop.set()
