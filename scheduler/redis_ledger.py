"""``RedisLedger``: the usage ledger of ``scheduler.redis_store.RedisStore``: reserve, settle, release,
the release of orphaned reservations, what holds one task id, a member's standing, the admin's overwrite and
the snapshot a restarted head reads.

A mixin of ``RedisStore``: it uses the store's client (``_r``), its key builder (``_k``) and the ledger
scripts the store registers (``_reserve``, ``_settle``, ``_release``, ``_release_orphaned``; their Lua is in
``scheduler.redis_scripts``). Its keys are ``usage:*``, ``reservation:*``, ``settled:*`` and
``index:usage|reservations|settled`` (the layout is in ``scheduler.redis_store``). As on the store, every
public method re-raises a redis error with the store's URL in its message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple
from typing import Any

from scheduler.ledger import Cost, ReserveResult
from scheduler.redis_connection import _esc, _public_methods_name_url, _s
from scheduler.state_store import TaskHold

_DIMS = ("cpu", "gpu", "credits")
_SETTLE_BATCH = 200  # settlements per script call: ~4 ms of server time each, so other clients wait little
_SWEEP_BATCH = 200  # reservations looked at per orphan-release script call (each cheaper than a settlement)


def _cost(h: dict[bytes, bytes], prefix: str = "") -> Cost:
    return Cost(*(int(h.get(f"{prefix}{d}".encode(), 0)) for d in _DIMS))


def _owner(h: dict[bytes, bytes]) -> list[str]:
    return [_s(h[b"coop"]), _s(h[b"member"]), _s(h[b"period"])]


@_public_methods_name_url
class RedisLedger:
    """The ledger part of the ``StateStore`` protocol on Redis (a mixin of ``RedisStore``)."""

    # ------------------------------------------------------------------ usage ledger
    def _usage_key(self, coop_id: str, member: str, period: str) -> str:
        return self._k("usage", coop_id, member, period)

    def reserve(self, task_id: str, coop_id: str, member: str, period: str, cost: Cost,
                limits: Cost | None = None) -> ReserveResult:
        """Hold ``cost`` unless the task is known or used + reserved + cost passes a limit (< 0 = none)."""
        keys = [self._k("reservation", task_id), self._k("settled", task_id),
                self._usage_key(coop_id, member, period), self._k("index", "reservations"), self._k("index", "usage")]
        lim = limits or Cost()
        args = [task_id, coop_id, member, period, cost.cpu, cost.gpu, cost.credits,
                "1" if limits is not None else "0", lim.cpu, lim.gpu, lim.credits]
        return ReserveResult(_s(self._reserve(keys=keys, args=args)))

    def settle(self, task_id: str, coop_id: str, member: str, period: str, measured: Cost) -> bool:
        """Charge ``measured`` to the reservation's period (or ``period``); False if already settled."""
        return self.settle_many([(task_id, coop_id, member, period, measured)])[0]

    def settle_many(self, items: Iterable[tuple[str, str, str, str, Cost]]) -> list[bool]:
        """Settle many tasks (batches of one script call each, pipelined); one boolean per item."""
        items = list(items)
        results: list[bool] = [False] * len(items)
        pending = [(i, self._usage_key(c, m, p), 0) for i, (_, c, m, p, _) in enumerate(items)]
        indices = [self._k("index", "reservations"), self._k("index", "settled"), self._k("index", "usage")]
        while pending:
            pipe = self._r.pipeline(transaction=False)
            batches = [pending[start:start + _SETTLE_BATCH] for start in range(0, len(pending), _SETTLE_BATCH)]
            for batch in batches:
                keys, args = list(indices), []
                for i, usage_key, retry in batch:
                    task_id, coop_id, member, period, measured = items[i]
                    keys += [self._k("reservation", task_id), self._k("settled", task_id), usage_key]
                    args += [task_id, coop_id, member, period, measured.cpu, measured.gpu, measured.credits, retry]
                self._settle(keys=keys, args=args, client=pipe)
            moved = []
            for batch, answers in zip(batches, pipe.execute()):
                for (i, _, _), answer in zip(batch, answers):
                    if isinstance(answer, bytes):  # the reservation is in another period: retry there
                        moved.append((i, _s(answer), 1))
                    elif answer == -1:  # ... and was released meanwhile: back to the given period
                        moved.append((i, self._usage_key(*items[i][1:4]), 0))
                    else:
                        results[i] = answer == 1
            pending = moved
        return results

    def release(self, task_id: str) -> bool:
        """Drop an open reservation; False if there was none."""
        reservation = self._k("reservation", task_id)
        usage_key = self._r.hget(reservation, "usage_key")
        while usage_key is not None:
            answer = self._release(keys=[reservation, _s(usage_key), self._k("index", "reservations")], args=[task_id])
            if not isinstance(answer, bytes):
                return answer == 1
            usage_key = answer
        return False

    def release_orphaned_reservations(self, grace_s: float) -> list[str]:
        """Release every reservation held at least ``grace_s`` seconds (by the Redis server's clock) whose
        task has no unfinished job record; the task ids released, sorted.

        Why a collector and not a transaction: a head call's writes are separate commands here (``batch``
        groups nothing), so a head killed, or cut off from Redis, between an admission's ``reserve`` and
        the job record ``create_job`` writes after it leaves a reservation that no job owns, held against the
        member's month for good (and a client's retry of that task id is told it is still being admitted:
        ``scheduler.head_task_ids``). Making the call's writes one MULTI/EXEC would need the
        core's decisions redone whenever a watched quota changed (``reserve`` is a check-and-hold whose
        answer the core acts on at once, and EXEC would only apply it at the end of the call); so, as
        Kubernetes' garbage collector deletes a dependent whose owner is gone, a reservation whose owner
        (the job record) is missing is released once it is older than any call takes. Each release is one
        script that checks, at that moment, that the reservation is still the one read (same usage key,
        still old enough) and that the job is still unrecorded: a head recording the job at the same
        moment either comes first (kept) or finds it released; releasing twice releases once. "Unfinished"
        is what a restarted head restores (``jobs:unfinished``), so a job it would run keeps its hold.

        Nearly every reservation is held by a job queued or running, legitimately: each page is first asked
        which of its tasks are in ``jobs:unfinished`` (SISMEMBER, pipelined), and only the others have their
        reservation read and, if old enough, reach the script, which checks again atomically. (With 20,000
        held reservations, reading each one and sending it to the script took ~0.45 s of this client and
        ~60 ms of the server's script time, every other client waiting, per sweep; the membership read alone
        ~0.2 s, and no script.) A job recorded after that read keeps its hold (the script sees its record);
        one recorded before it and finished since waits for the next sweep."""
        index, unfinished, grace = self._k("index", "reservations"), self._k("jobs", "unfinished"), float(grace_s)
        seconds, micros = self._r.time()
        now = seconds + micros / 1e6  # (only to skip the young: the script reads the clock again)
        task_ids = sorted({_s(t) for t in self._r.sscan_iter(index, count=1000)})
        keys_per_call = [index, unfinished]
        released: list[str] = []
        for start in range(0, len(task_ids), _SWEEP_BATCH):
            page = task_ids[start:start + _SWEEP_BATCH]
            pipe = self._r.pipeline(transaction=False)
            for task_id in page:
                pipe.sismember(unfinished, task_id)
            page = [task_id for task_id, recorded in zip(page, pipe.execute()) if not recorded]
            if not page:
                continue
            pipe = self._r.pipeline(transaction=False)
            for task_id in page:
                pipe.hmget(self._k("reservation", task_id), "usage_key", "reserved_at")
            candidates = [(task_id, _s(usage_key)) for task_id, (usage_key, at) in zip(page, pipe.execute())
                          if usage_key is not None and (at is None or now - float(at) >= grace)]
            if not candidates:
                continue
            keys, args = list(keys_per_call), [repr(grace)]
            for task_id, usage_key in candidates:
                keys += [self._k("reservation", task_id), usage_key]
                args.append(task_id)
            answers = self._release_orphaned(keys=keys, args=args)
            released += [task_id for (task_id, _), answer in zip(candidates, answers) if answer == 1]
        return released

    def task_hold(self, task_id: str) -> TaskHold | None:
        """What the ledger holds under ``task_id``: its open reservation (and when it was made, by the server's
        clock) or its charge; both read in one MULTI, so a settlement running meanwhile is seen whole."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hmget(self._k("reservation", task_id), "coop", "member", "reserved_at")
        pipe.hmget(self._k("settled", task_id), "coop", "member")
        (coop, member, at), (settled_coop, settled_member) = pipe.execute()
        if coop is not None:
            return TaskHold(coop_id=_s(coop), member=_s(member), reserved_at=float(at) if at is not None else None)
        if settled_coop is not None:
            return TaskHold(coop_id=_s(settled_coop), member=_s(settled_member), settled=True)
        return None

    def standing(self, coop_id: str, member: str, period: str) -> tuple[Cost, Cost, int]:
        """(settled usage, open reservations, tasks completed) of one member's period."""
        h = self._r.hgetall(self._usage_key(coop_id, member, period))
        return _cost(h), _cost(h, "reserved_"), int(h.get(b"completed", 0))

    def set_usage(self, coop_id: str, member: str, period: str, used: Cost, completed: int | None = None) -> None:
        """Overwrite a period's settled usage (an admin action); reservations stay, and the completed
        count unless ``completed`` is given."""
        key = self._usage_key(coop_id, member, period)
        fields: dict[str, Any] = {"coop": coop_id, "member": member, "period": period,
                                  "cpu": used.cpu, "gpu": used.gpu, "credits": used.credits}
        if completed is not None:
            fields["completed"] = completed
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.sadd(self._k("index", "usage"), key)
        pipe.execute()

    def coop_standing(self, coop_id: str, period: str) -> tuple[Cost, Cost, int]:
        """(used, reserved, tasks completed) of every member of ``coop_id`` in ``period``, summed: one pass over
        the usage index (as ``usage_members``), then the members' hashes in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for member in self.usage_members(coop_id, period):
            pipe.hgetall(self._usage_key(coop_id, member, period))
        used, held, completed = Cost(), Cost(), 0
        for h in pipe.execute():
            used, held, completed = used + _cost(h), held + _cost(h, "reserved_"), completed + int(h.get(b"completed", 0))
        return used, held, completed

    def usage_members(self, coop_id: str, period: str) -> list[str]:
        """Members of ``coop_id`` with settled usage or open reservations in ``period``, sorted."""
        prefix, suffix = self._k("usage", coop_id) + ":", ":" + _esc(period)
        keys = [k for k in map(_s, self._r.sscan_iter(self._k("index", "usage"))) if k.startswith(prefix)
                and k.endswith(suffix) and ":" not in k[len(prefix):-len(suffix)]]
        return sorted({_s(m) for m in (self._r.hget(k, "member") for k in keys) if m is not None})

    def ledger_snapshot(self) -> dict:
        """The whole ledger in ``Ledger.snapshot()`` format, read consistently (WATCH on the indices)."""
        indices = [self._k("index", "usage"), self._k("index", "reservations"), self._k("index", "settled")]
        seen: dict[str, list[str]] = {}

        def read(pipe: Any) -> None:
            seen["usage"] = sorted(_s(k) for k in pipe.smembers(indices[0]))
            seen["reservation"] = sorted(_s(t) for t in pipe.smembers(indices[1]))
            seen["settled"] = sorted(_s(t) for t in pipe.smembers(indices[2]))
            pipe.multi()
            for key in seen["usage"]:
                pipe.hgetall(key)
            for kind in ("reservation", "settled"):
                for task_id in seen[kind]:
                    pipe.hgetall(self._k(kind, task_id))

        hashes = iter(self._r.transaction(read, *indices))
        usage = [h for _, h in zip(seen["usage"], hashes) if h]
        rows = {kind: [[t, *_owner(h), *astuple(_cost(h))] for t, h in zip(seen[kind], hashes) if h]
                for kind in ("reservation", "settled")}
        return {"used": sorted([*_owner(h), *astuple(_cost(h))] for h in usage if b"cpu" in h),
                "completed": sorted([*_owner(h), int(h[b"completed"])] for h in usage if int(h.get(b"completed", 0))),
                "reservations": rows["reservation"], "settled": rows["settled"]}
