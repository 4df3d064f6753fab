"""Shorter garbage-collection pauses in the long-running actors (head, tracker, workers).

CPython's cyclic collector, in a full collection, scans every object it tracks. An actor at rest
already holds ~90,000 of them (Ray, gRPC, pydantic's validators, numpy): a full collection of an
idle head took 21-27 ms on this 2-core machine. Almost none of them ever becomes garbage: they live
as long as the process. ``freeze_long_lived`` runs once when an actor has started (for the head,
after it took back its state from the store): it collects what is garbage by then and moves
everything still alive into the collector's permanent generation (``gc.freeze``), which later
collections skip (measured: the same idle head's full collection, ~0 ms after). A frozen object that
is dropped later is still freed by its reference count; only a reference cycle among frozen objects
that becomes unreachable stays allocated, which start-up state does not do.

Objects made later (jobs kept in memory, ~16 tracked each) are collected as usual: a head keeping
10,000 finished jobs still pauses for theirs (see the README's known gaps).
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collect, then exempt every object alive now from later collections. Returns how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def freeze_in_actor() -> int:
    """``freeze_long_lived`` inside a Ray actor; elsewhere (a head or worker built in a test's own process, or
    in a driver) nothing, so the caller's collector is left alone. Returns how many are frozen."""
    import ray  # (here, not at the top: the rest of this module is plain Python)

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return 0
    return freeze_long_lived()
