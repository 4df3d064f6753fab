"""An executor's own queue (executors.local_queue): start what fits, the rest first come first started."""

from __future__ import annotations

from executors.local_queue import LocalQueue

ONE, TWO = (1.0, 0.0, 0.0, 0.0), (2.0, 0.0, 0.0, 0.0)


def test_what_fits_starts_and_the_rest_waits_in_order():
    q: LocalQueue[str] = LocalQueue((2.0, 0.0, 0.0, 0.0))
    assert [q.offer(k, ONE, k) for k in "abc"] == [True, True, False]
    assert q.offer("d", ONE, "d") is False and q.keys() == ["c", "d"]
    q.ended(ONE)
    assert q.ready() == ["c"] and q.keys() == ["d"]


def test_a_large_task_at_the_front_is_not_passed_by_smaller_ones():
    q: LocalQueue[str] = LocalQueue((2.0, 0.0, 0.0, 0.0))
    assert q.offer("small", ONE, "small") and not q.offer("big", TWO, "big")
    assert not q.offer("tiny", ONE, "tiny")  # it would fit, but waits behind "big"
    q.ended(ONE)
    assert q.ready() == ["big"] and q.keys() == ["tiny"]


def test_with_nothing_running_anything_starts_and_without_capacity_everything_does():
    q: LocalQueue[str] = LocalQueue((1.0, 0.0, 0.0, 0.0))
    assert q.offer("too-big", TWO, "too-big")  # fits the executor at all (the head checked): never waits forever
    unbounded: LocalQueue[str] = LocalQueue()
    assert all(unbounded.offer(k, TWO, k) for k in "abc") and len(unbounded) == 0


def test_a_removed_task_never_starts():
    q: LocalQueue[str] = LocalQueue((1.0, 0.0, 0.0, 0.0))
    q.offer("a", ONE, "a")
    q.offer("b", ONE, "b")
    assert q.remove("b") == "b" and q.remove("b") is None and "b" not in q
    q.ended(ONE)
    assert q.ready() == []
