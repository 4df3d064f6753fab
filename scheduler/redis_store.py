"""``RedisStore``: the ``StateStore`` on a shared Redis server, for clusters of head replicas.

URL: ``redis://[:password@]host:port/db[?prefix=coopsched:]`` (``rediss://`` for TLS). Every
key lives under the prefix (default ``coopsched:``), so several deployments can share a
server. Key components are escaped (``%`` -> ``%25``, ``:`` -> ``%3A``), so ids that
contain colons (``timebank:seattle``, ``did:icn:alice``) cannot collide; plain ids read
as themselves. Amounts are integers in millionths (``scheduler.ledger.Cost``) changed
with HINCRBY only. No read path uses KEYS or SCAN: every listing starts at an index.

Keys (after the prefix; fixed names never share a namespace with an id)::

    usage:<coop>:<member>:<period>  hash  coop member period | cpu gpu credits completed
                                          | reserved_cpu reserved_gpu reserved_credits
    reservation:<task>              hash  coop member period cpu gpu credits usage_key reserved_at
    settled:<task>                  hash  coop member period cpu gpu credits (as charged)
    index:usage                     set   usage hash keys           (for ledger_snapshot)
    index:reservations              set   task ids holding a reservation
    index:settled                   set   task ids settled
    policy:versions:<coop>          hash  version -> {author, at, note, policy}; policy null = removal
    policy:counter:<coop>           str   last version number (INCR)
    policy:active                   hash  coop -> active version
    executors                       hash  executor_id -> {spec, status}
    keys                            hash  key_id -> registered principal (JSON)
    nonce:<key_id>:<nonce>          str   a signed request seen by some replica (expires after 2 windows)
    head_state:<owner>              hash  name -> what that head keeps of its own (JSON): its borrowing history
    job:<task>                      str   job record (JSON)
    payload:<task>                  str   pickled payload (raw bytes)
    checkpoint:<task>               hash  attempt, saved_at, data: what the task last saved of its progress
    jobs:submitted                  zset  task -> submitted_at
    jobs:coop:<coop> jobs:member:<member> jobs:state:<state> jobs:unfinished   sets of task ids
    reports:<task>                  hash  attempt -> usage report (JSON); HSETNX = idempotent
    index:reports index:unforwarded_reports  zset  [task, attempt] (JSON) -> receipt number
    counter:reports counter:changes str   INCR'd receipt number, change seq
    changes:log                     hash  seq -> {coop_id, kind, actor, at, detail}
    changes:all changes:coop:<coop> list  seqs, oldest first
    audit:<session>:<seq_no>        str   AuditRecord (JSON), the key of seed 000's quality checker
    audit_index:time audit_index:coop:<coop> audit_index:member:<member>
                                    zset  "<session>:<seq_no>" -> timestamp
    audit_index:session:<session>   zset  seq_no -> seq_no
    audit_seq:<session>             str   the last seq_no given (next_audit_seq)
    rate:<bucket>                   hash  tokens last: a RateLimit's token bucket (store_rate_buckets), kept
                                          until it would be full again

``reserve``, ``settle``, ``release``, ``release_orphaned_reservations``, ``create_job``, ``put_policy``,
``remove_policy``, ``put_report``, ``log_change``, ``rate_tokens`` and ``take_rate_token`` are Lua scripts
(EVALSHA), so head replicas sharing a coop's quota never together overshoot it (nor both record one task
id); ``put_job``,
``delete_damaged_job``, ``put_audit`` and ``ledger_snapshot`` are WATCH/MULTI transactions. Scripts
touch only the keys they are given (a settle whose reservation sits in another period answers with
that period's key and is retried there).

Redis errors propagate as redis exceptions (the head reports them as ``unavailable``);
their message names the store URL (password hidden).

The usage ledger's methods are in ``scheduler.redis_ledger`` (``RedisLedger``, a mixin of this store);
key escaping, reply decoding and the naming of errors in ``scheduler.redis_connection``.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from scheduler.damaged_records import (damaged_executor, is_damaged, log_damaged_executor, log_damaged_policy,
                                       parse_head_state, parse_job, parse_key, parse_report, read_object, why_of)
from scheduler.ledger import Cost
from scheduler.redis_connection import _esc, _public_methods_name_url, _redacted, _s
from scheduler.redis_ledger import RedisLedger
from scheduler.redis_scripts import (CREATE_JOB, LOG_CHANGE, NEXT_AUDIT_SEQ, PUT_POLICY, PUT_REPORT, RATE_AVAILABLE,
                                     RATE_TAKE, RELEASE, RELEASE_ORPHANED, RESERVE, SETTLE)
from scheduler.state_store import AuditRecord, DamagedJobDeletion, PolicyVersion, StoredCheckpoint
from scheduler.tasks import JobState

DEFAULT_PREFIX = "coopsched:"
_DIMS = ("cpu", "gpu", "credits")
_FINISHED = frozenset(s.value for s in JobState if s.finished)


@_public_methods_name_url
class RedisStore(RedisLedger):
    """The ``StateStore`` protocol on Redis (see the module docstring for the keys)."""

    shared = True  # head replicas share it: quotas, keys and the nonces of signed requests

    def __init__(self, url: str) -> None:
        self.url = url
        self._where = _redacted(url)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        self.prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
        client_url = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
        try:
            self._r = redis.Redis.from_url(client_url, decode_responses=False, socket_connect_timeout=5)
        except ValueError as exc:
            raise ValueError(f"bad redis store url {self._where}: {exc}; example: redis://127.0.0.1:6379/0") from exc
        self._reserve = self._r.register_script(RESERVE)
        self._settle = self._r.register_script(SETTLE)
        self._release = self._r.register_script(RELEASE)
        self._release_orphaned = self._r.register_script(RELEASE_ORPHANED)
        self._create_job = self._r.register_script(CREATE_JOB)
        self._put_policy = self._r.register_script(PUT_POLICY)
        self._put_report = self._r.register_script(PUT_REPORT)
        self._log_change = self._r.register_script(LOG_CHANGE)
        self._next_audit_seq = self._r.register_script(NEXT_AUDIT_SEQ)
        self._rate_available = self._r.register_script(RATE_AVAILABLE)
        self._rate_take = self._r.register_script(RATE_TAKE)

    def _k(self, *parts: object) -> str:
        return self.prefix + ":".join(_esc(p) for p in parts)

    # ------------------------------------------------------------------ rate-limit buckets (store_rate_buckets)
    def rate_tokens(self, name: str, rate: float, burst: float) -> float:
        """The tokens bucket ``name`` holds now (a bucket never spent from is full)."""
        return float(self._rate_available(keys=[self._k("rate", name)], args=[repr(float(rate)), repr(float(burst))]))

    def take_rate_token(self, name: str, rate: float, burst: float, keep_s: int) -> float:
        """Spend one token of bucket ``name`` (none below 0); what is left. Idle for ``keep_s``, it is dropped."""
        return float(self._rate_take(keys=[self._k("rate", name)],
                                     args=[repr(float(rate)), repr(float(burst)), int(keep_s)]))

    def batch(self, rollback_if: Any = None) -> contextlib.AbstractContextManager[None]:
        """Nothing to group: every write here is already one atomic command or script (so nothing to
        roll back either: what a failed call wrote before it failed stays written). A call cut off between
        its admission's ``reserve`` and its job record leaves a reservation nothing owns:
        ``release_orphaned_reservations`` releases it later."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()
        self._r.connection_pool.disconnect()

    # ------------------------------------------------------------------ policies
    def _version(self, coop_id: str, version: int, body: bytes | str, active: int | None) -> PolicyVersion:
        """A stored version; one whose text cannot be read (not a JSON object of author, at, note and policy)
        with ``damaged`` set, never raised."""
        predecessor = version - 1 if version > 1 else None
        data, why = read_object(body)
        if data is not None:
            try:
                return PolicyVersion(coop_id=coop_id, version=version, predecessor=predecessor, author=data["author"],
                                     at=data["at"], note=data["note"], policy=data["policy"], active=version == active)
            except (KeyError, ValueError) as exc:  # a field missing, or of another type (pydantic's ValidationError)
                why = why_of(exc)
        log_damaged_policy(self.url, coop_id, version, why)
        return PolicyVersion(coop_id=coop_id, version=version, predecessor=predecessor, author="", at=0.0, note="",
                             policy=None, active=version == active, damaged=why)

    def _write_policy(self, coop_id: str, policy: dict | None, author: str, at: float, note: str) -> int:
        body = json.dumps({"author": author, "at": at, "note": note, "policy": policy})
        keys = [self._k("policy", "versions", coop_id), self._k("policy", "counter", coop_id),
                self._k("policy", "active")]
        return int(self._put_policy(keys=keys, args=[coop_id, body, "1" if policy is None else "0"]))

    def put_policy(self, coop_id: str, policy: dict, author: str, at: float, note: str = "") -> PolicyVersion:
        """Store ``policy`` as the coop's next version and make it active."""
        version = self._write_policy(coop_id, policy, author, at, note)
        return PolicyVersion(coop_id=coop_id, version=version, predecessor=version - 1 if version > 1 else None,
                             author=author, at=at, note=note, policy=policy, active=True)

    def remove_policy(self, coop_id: str, author: str, at: float) -> bool:
        """Deactivate the coop's policy (a version with no policy); False if none is active."""
        return self._write_policy(coop_id, None, author, at, "") > 0

    def active_policy(self, coop_id: str) -> PolicyVersion | None:
        active = self._r.hget(self._k("policy", "active"), coop_id)
        return self.policy_version(coop_id, int(active)) if active is not None else None

    def active_policies(self) -> list[PolicyVersion]:
        """The active version of every coop, by coop id."""
        active = sorted((_s(c), int(v)) for c, v in self._r.hgetall(self._k("policy", "active")).items())
        pipe = self._r.pipeline(transaction=False)
        for coop_id, version in active:
            pipe.hget(self._k("policy", "versions", coop_id), version)
        return [self._version(c, v, body, v) for (c, v), body in zip(active, pipe.execute()) if body is not None]

    def active_policy_versions(self) -> dict[str, int]:
        return {_s(c): int(v) for c, v in self._r.hgetall(self._k("policy", "active")).items()}

    def policy_version(self, coop_id: str, version: int) -> PolicyVersion | None:
        pipe = self._r.pipeline(transaction=True)
        pipe.hget(self._k("policy", "versions", coop_id), version)
        pipe.hget(self._k("policy", "active"), coop_id)
        body, active = pipe.execute()
        return self._version(coop_id, version, body, active and int(active)) if body is not None else None

    def policy_history(self, coop_id: str) -> list[PolicyVersion]:
        """Every version, oldest first."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(self._k("policy", "versions", coop_id))
        pipe.hget(self._k("policy", "active"), coop_id)
        versions, active = pipe.execute()
        active_version = int(active) if active is not None else None
        return [self._version(coop_id, v, versions[f], active_version)
                for v, f in sorted((int(f), f) for f in versions)]

    # ------------------------------------------------------------------ executors
    def put_executor(self, spec: dict, status: str) -> None:
        executor_id = spec["executor_id"]
        order = self._k("executor_order")
        if self._r.hget(order, executor_id) is None:  # its place in registration order, given once; one
            # registered before places were kept stays among those (0: listed first, by id)
            known = self._r.hexists(self._k("executors"), executor_id)
            self._r.hsetnx(order, executor_id, 0 if known else self._r.incr(self._k("executor_seq")))
        body = json.dumps({"spec": spec, "status": status})
        self._r.hset(self._k("executors"), executor_id, body)

    def remove_executor(self, executor_id: str) -> bool:
        self._r.hdel(self._k("executor_order"), executor_id)
        return self._r.hdel(self._k("executors"), executor_id) == 1

    def executors(self) -> list[tuple[dict, str]]:
        """Every executor's spec and status, in registration order (then by id); one whose entry cannot be read
        (not a JSON object of a spec object and a status) as ``damaged_executor``, its status "unknown"."""
        order = {_s(i): int(n) for i, n in self._r.hgetall(self._k("executor_order")).items()}
        rows = sorted((order.get(_s(i), 0), _s(i), b) for i, b in self._r.hgetall(self._k("executors")).items())
        return [self._executor(executor_id, body) for _, executor_id, body in rows]

    def _executor(self, executor_id: str, body: bytes) -> tuple[dict, str]:
        row, why = read_object(body)
        if row is not None:
            if isinstance(row.get("spec"), dict) and isinstance(row.get("status"), str):
                return row["spec"], row["status"]
            why = "no spec object and status text in it"
        log_damaged_executor(self.url, executor_id, why)
        return damaged_executor(executor_id, why), "unknown"

    # ------------------------------------------------------------------ key registry
    def put_key(self, key_id: str, principal: dict) -> None:
        self._r.hset(self._k("keys"), key_id, json.dumps(principal))

    def remove_key(self, key_id: str) -> bool:
        return self._r.hdel(self._k("keys"), key_id) == 1

    def keys(self) -> list[dict]:
        """Every registered principal, by key id; one that cannot be read as ``damaged_key``."""
        stored = sorted((_s(i), b) for i, b in self._r.hgetall(self._k("keys")).items())
        return [parse_key(body, key_id, self.url) for key_id, body in stored]

    def put_head_state(self, owner: str, name: str, state: dict) -> None:
        self._r.hset(self._k("head_state", owner), name, json.dumps(state))

    def head_state(self, owner: str, name: str) -> dict | None:
        body = self._r.hget(self._k("head_state", owner), name)
        return None if body is None else parse_head_state(body)

    def claim_nonce(self, key_id: str, nonce: str, ttl_s: float) -> bool:
        """SET NX with an expiry: of several head replicas, exactly one accepts a given signed request."""
        return bool(self._r.set(self._k("nonce", key_id, nonce), b"1", nx=True, px=max(1, int(ttl_s * 1000))))

    # ------------------------------------------------------------------ jobs
    def put_job(self, task_id: str, record: dict) -> None:
        """Store a job record, moving it between the coop/member/state indices (a job's first record:
        ``create_job``; this one writes over what is there, for the head that holds the job)."""
        key = self._k("job", task_id)
        body = json.dumps(record)

        def write(pipe: Any) -> None:
            old = pipe.get(key)
            previous = parse_job(old, task_id, self.url) if old is not None else None
            pipe.multi()
            if previous is not None:  # (a damaged one's indices cannot be read: out of every state's it may be in;
                # its owner's stay, as a task id keeps its owner)
                for index in self._job_indices(previous) if not is_damaged(previous) else [
                        self._k("jobs", "state", s.value) for s in JobState] + [self._k("jobs", "unfinished")]:
                    pipe.srem(index, task_id)
            pipe.set(key, body)
            pipe.zadd(self._k("jobs", "submitted"), {task_id: float(record.get("submitted_at") or 0.0)})
            for index in self._job_indices(record):
                pipe.sadd(index, task_id)

        self._r.transaction(write, key)

    def running_count(self, coop_id: str, member: str) -> int:
        """How many of the member's jobs in the coop the store has as running, whichever head recorded them
        (the intersection of three indices; Redis starts from the smallest, the running one)."""
        return len(self._r.sinter([self._k("jobs", "state", JobState.RUNNING.value), self._k("jobs", "coop", coop_id),
                                   self._k("jobs", "member", member)]))

    def create_job(self, task_id: str, record: dict) -> bool:
        """Store a job's first record, with its indices, unless a record of ``task_id`` is there (another head
        replica's decision): one script, so of two replicas deciding one id at once exactly one writes. False,
        and nothing written, if one is there."""
        keys = [self._k("job", task_id), self._k("jobs", "submitted"), *self._job_indices(record)]
        args = [task_id, json.dumps(record), repr(float(record.get("submitted_at") or 0.0))]
        return self._create_job(keys=keys, args=args) == 1

    def _job_indices(self, record: dict) -> list[str]:
        indices = [self._k("jobs", field, record[name])
                   for field, name in (("coop", "coop_id"), ("member", "member"), ("state", "state"))
                   if record.get(name) is not None]
        if record.get("state") not in _FINISHED:
            indices.append(self._k("jobs", "unfinished"))
        return indices

    def get_job(self, task_id: str) -> dict | None:
        """The job's record; a damaged one as ``damaged_job`` (``scheduler.damaged_records``)."""
        body = self._r.get(self._k("job", task_id))
        return self._job(task_id, body) if body is not None else None

    def _job(self, task_id: str, body: bytes) -> dict:
        record = parse_job(body, task_id, self.url)
        if is_damaged(record):  # what the indices still say of it (a restarted head holds nothing for a job
            record["state"], record["submitted_at"] = self._indexed(task_id)  # that never started)
        return record

    def _indexed(self, task_id: str) -> tuple[str | None, float | None]:
        """A job's state by the state index it is in (None unless exactly one), and its submission time."""
        states = [s.value for s in JobState]
        pipe = self._r.pipeline(transaction=False)
        for state in states:
            pipe.sismember(self._k("jobs", "state", state), task_id)
        pipe.zscore(self._k("jobs", "submitted"), task_id)
        *member_of, submitted_at = pipe.execute()
        found = [state for state, member in zip(states, member_of) if member]
        return (found[0] if len(found) == 1 else None), submitted_at

    def _jobs_in(self, sets: list[str], limit: int | None) -> list[dict]:
        submitted = self._k("jobs", "submitted")
        if sets:
            ids = self._r.zinter({submitted: 1, **{s: 0 for s in sets}})[:limit]
        else:
            ids = self._r.zrange(submitted, 0, -1 if limit is None else limit - 1)
        bodies = self._r.mget([self._k("job", _s(i)) for i in ids]) if ids else []
        return [self._job(_s(i), b) for i, b in zip(ids, bodies) if b is not None]

    def jobs(self, coop_id: str | None = None, member: str | None = None, state: str | None = None,
             limit: int | None = None) -> list[dict]:
        """Jobs matching every given filter, oldest submission first."""
        if limit is not None and limit <= 0:
            return []
        sets = [self._k("jobs", field, value)
                for field, value in (("coop", coop_id), ("member", member), ("state", state)) if value is not None]
        return self._jobs_in(sets, limit)

    def unfinished_jobs(self) -> list[dict]:
        """Jobs not yet in a final state, oldest submission first."""
        return self._jobs_in([self._k("jobs", "unfinished")], None)

    def put_payload(self, task_id: str, data: bytes) -> None:
        self._r.set(self._k("payload", task_id), data)

    def get_payload(self, task_id: str) -> bytes | None:
        return self._r.get(self._k("payload", task_id))

    def delete_payload(self, task_id: str) -> None:
        self._r.delete(self._k("payload", task_id), self._k("checkpoint", task_id))

    def put_checkpoint(self, task_id: str, attempt: int, saved_at: float, data: bytes) -> None:
        self._r.hset(self._k("checkpoint", task_id), mapping={"attempt": attempt, "saved_at": repr(saved_at),
                                                              "data": data})

    def get_checkpoint(self, task_id: str) -> StoredCheckpoint | None:
        stored = self._r.hgetall(self._k("checkpoint", task_id))
        if not stored:
            return None
        return StoredCheckpoint(int(stored[b"attempt"]), float(stored[b"saved_at"]), bytes(stored[b"data"]))

    def checkpoint_info(self, task_id: str) -> tuple[int, float, int] | None:
        key = self._k("checkpoint", task_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hmget(key, "attempt", "saved_at")
        pipe.hstrlen(key, "data")
        (attempt, saved_at), size = pipe.execute()
        return None if attempt is None else (int(attempt), float(saved_at), int(size))

    def delete_damaged_job(self, task_id: str) -> DamagedJobDeletion:
        """Delete ``task_id``'s record if its text cannot be read, with its payload, its open reservation and
        every index entry of it, in one MULTI under WATCH of the record and the reservation: a head writing the
        record over (``put_job``), or a settlement or release of the reservation, at that moment makes EXEC fail,
        and the whole check runs again on what is there then. A readable record, or none: nothing changes.

        The state indices are known by name (the task leaves all of them); whose it was is not kept beside a
        damaged record here, so its coop and member indices are those of the owner its reservation or charge
        names, and where the ledger names none (a refused or cancelled job), every coop and member index is
        looked through (SCAN, then SISMEMBER: a rare operator's call pays for it, the listings never do). None
        may be left: a task id submitted again, by another coop, would be listed under this one's."""
        job, reservation = self._k("job", task_id), self._k("reservation", task_id)
        done: dict[str, DamagedJobDeletion] = {}

        def delete(pipe: Any) -> None:
            body = pipe.get(job)
            if body is None or read_object(body)[0] is not None:
                done["answer"] = DamagedJobDeletion(task_id=task_id, outcome="not_found" if body is None else
                                                    "not_damaged")
                return
            held = pipe.hgetall(reservation)
            owner = [held.get(b"coop"), held.get(b"member")] if held else pipe.hmget(
                self._k("settled", task_id), "coop", "member")
            state, _ = self._indexed(task_id)
            payload = self._k("payload", task_id)
            payload_deleted = bool(pipe.exists(payload))
            owner_indices = [self._k("jobs", field, _s(name)) for field, name in zip(("coop", "member"), owner)
                             if name is not None] or self._indices_holding(task_id)
            pipe.multi()
            pipe.delete(job, payload, self._k("checkpoint", task_id))
            pipe.zrem(self._k("jobs", "submitted"), task_id)
            for index in [*(self._k("jobs", "state", s.value) for s in JobState), self._k("jobs", "unfinished"),
                          *owner_indices]:
                pipe.srem(index, task_id)
            released = period = None
            if held:  # the RELEASE script, queued in this MULTI: off the member's month, out of the reservation index
                released, period = Cost(*(int(held[d.encode()]) for d in _DIMS)), _s(held[b"period"])
                self._release(keys=[reservation, _s(held[b"usage_key"]), self._k("index", "reservations")],
                              args=[task_id], client=pipe)
            done["answer"] = DamagedJobDeletion(
                task_id=task_id, outcome="deleted", coop_id=_s(owner[0]) if owner[0] is not None else None,
                member=_s(owner[1]) if owner[1] is not None else None, state=state, released=released,
                period=period, payload_deleted=payload_deleted)

        self._r.transaction(delete, job, reservation)
        return done["answer"]

    def _indices_holding(self, task_id: str) -> list[str]:
        """Every coop and member index of jobs that holds ``task_id``."""
        literal = "".join("\\" + c if c in "\\*?[]" else c for c in self.prefix)  # (a glob matching the prefix)
        indices = [_s(k) for field in ("coop", "member")
                   for k in self._r.scan_iter(match=f"{literal}jobs:{field}:*", count=1000)]
        pipe = self._r.pipeline(transaction=False)
        for index in indices:
            pipe.sismember(index, task_id)
        return [index for index, holds in zip(indices, pipe.execute()) if holds]

    # ------------------------------------------------------------------ usage reports
    def put_report(self, report: dict) -> bool:
        """Store a report once per (task id, attempt); False if it was already stored."""
        task_id, attempt = report["task_id"], int(report.get("attempt", 1))  # as SQLite: none means the first
        keys = [self._k("reports", task_id), self._k("index", "reports"), self._k("index", "unforwarded_reports"),
                self._k("counter", "reports")]
        return self._put_report(keys=keys, args=[attempt, json.dumps(report), json.dumps([task_id, attempt])]) == 1

    def _report_refs(self, index: str) -> list[tuple[str, int]]:
        """(task id, attempt) of every report in an index, in the order received."""
        return [tuple(json.loads(m)) for m in self._r.zrange(self._k("index", index), 0, -1)]

    def _reports_of(self, refs: list[tuple[str, int]]) -> list[dict]:
        pipe = self._r.pipeline(transaction=False)
        for task_id, attempt in refs:
            pipe.hget(self._k("reports", task_id), attempt)
        return [parse_report(b, task_id, attempt, self.url)
                for (task_id, attempt), b in zip(refs, pipe.execute()) if b is not None]

    def reports(self, task_id: str | None = None) -> list[dict]:
        """A task's reports by attempt, or every report by (task id, attempt); one that cannot be read as
        ``damaged_report``."""
        if task_id is None:
            return self._reports_of(sorted(self._report_refs("reports")))
        stored = self._r.hgetall(self._k("reports", task_id))
        return [parse_report(body, task_id, attempt, self.url)
                for attempt, body in sorted((int(a), b) for a, b in stored.items())]

    def unforwarded_reports(self) -> list[dict]:
        """Reports not yet marked forwarded, in the order received."""
        return self._reports_of(self._report_refs("unforwarded_reports"))

    def mark_forwarded(self, keys: list[tuple[str, int]]) -> None:
        """Mark a batch of (task id, attempt) reports forwarded, in one ZREM."""
        if keys:
            self._r.zrem(self._k("index", "unforwarded_reports"),
                         *(json.dumps([task_id, int(attempt)]) for task_id, attempt in keys))

    # ------------------------------------------------------------------ change log
    def log_change(self, coop_id: str, kind: str, actor: str, at: float, detail: dict) -> int:
        """Append a change; returns its sequence number (increasing)."""
        body = json.dumps({"coop_id": coop_id, "kind": kind, "actor": actor, "at": at, "detail": detail})
        keys = [self._k("counter", "changes"), self._k("changes", "log"), self._k("changes", "all"),
                self._k("changes", "coop", coop_id)]
        return int(self._log_change(keys=keys, args=[body]))

    def changes(self, coop_id: str | None = None, limit: int = 100) -> list[dict]:
        """The latest changes (of one coop, or all), newest first."""
        if limit <= 0:
            return []
        index = self._k("changes", "all") if coop_id is None else self._k("changes", "coop", coop_id)
        seqs = [int(s) for s in reversed(self._r.lrange(index, -limit, -1))]
        bodies = self._r.hmget(self._k("changes", "log"), seqs) if seqs else []
        return [{"seq": seq, **json.loads(body)} for seq, body in zip(seqs, bodies) if body is not None]

    # ------------------------------------------------------------------ audit samples
    def _audit_indices(self, record: AuditRecord) -> list[str]:
        return [self._k("audit_index", "time"), self._k("audit_index", "coop", record.coop_id),
                self._k("audit_index", "member", record.member)]

    def next_audit_seq(self, session_id: str) -> int:
        return int(self._next_audit_seq(keys=[self._k("audit_seq", session_id),
                                               self._k("audit_index", "session", session_id)]))

    def put_audit(self, record: AuditRecord) -> None:
        """Store (or replace) ``audit:<session_id>:<seq_no>`` and index it by time, coop, member, session."""
        key = self._k("audit", record.session_id, record.seq_no)
        ref = f"{_esc(record.session_id)}:{record.seq_no}"

        def write(pipe: Any) -> None:
            old = pipe.get(key)
            pipe.multi()
            if old is not None:
                for index in self._audit_indices(AuditRecord.model_validate_json(old)):
                    pipe.zrem(index, ref)
            pipe.set(key, record.model_dump_json())
            for index in self._audit_indices(record):
                pipe.zadd(index, {ref: record.timestamp})
            pipe.zadd(self._k("audit_index", "session", record.session_id), {str(record.seq_no): record.seq_no})

        self._r.transaction(write, key)

    def get_audit(self, session_id: str, seq_no: int) -> AuditRecord | None:
        body = self._r.get(self._k("audit", session_id, seq_no))
        return AuditRecord.model_validate_json(body) if body is not None else None

    def latest_audit(self, session_id: str) -> AuditRecord | None:
        """The session's record with the highest seq_no."""
        top = self._r.zrevrange(self._k("audit_index", "session", session_id), 0, 0)
        return self.get_audit(session_id, int(top[0])) if top else None

    def _audits(self, refs: list[bytes | str]) -> list[AuditRecord]:
        if not refs:
            return []
        bodies = self._r.mget([self.prefix + "audit:" + _s(r) for r in refs])
        records = [AuditRecord.model_validate_json(b) for b in bodies if b is not None]
        return sorted(records, key=lambda r: (r.timestamp, r.session_id, r.seq_no), reverse=True)

    def list_audit(self, coop_id: str | None = None, member: str | None = None, session_id: str | None = None,
                   since: float | None = None, limit: int = 100) -> list[AuditRecord]:
        """Records matching every given filter (timestamp >= ``since``), newest first."""
        if limit <= 0:
            return []
        low = "-inf" if since is None else since
        if session_id is not None:
            seqs = self._r.zrange(self._k("audit_index", "session", session_id), 0, -1)
            found = [r for r in self._audits([f"{_esc(session_id)}:{_s(s)}" for s in seqs])
                     if (coop_id is None or r.coop_id == coop_id) and (member is None or r.member == member)
                     and (since is None or r.timestamp >= since)]
            return found[:limit]
        indices = [self._k("audit_index", name, value)
                   for name, value in (("coop", coop_id), ("member", member)) if value is not None]
        # (a limit cuts by timestamp, then session and sequence number, as SQLite's ORDER BY; a sorted set
        # breaks equal scores by the member's text, where "s:9" comes before "s:10": records tied with the
        # last one taken are all read, then sorted, then cut)
        if len(indices) <= 1:
            key = indices[0] if indices else self._k("audit_index", "time")
            top = self._r.zrevrangebyscore(key, "+inf", low, start=0, num=limit, withscores=True)
            refs = [ref for ref, _ in top]
            if len(top) == limit:
                cut = top[-1][1]
                refs = list(dict.fromkeys(refs + self._r.zrangebyscore(key, cut, cut)))
        else:
            scored = [(ref, t) for ref, t in reversed(self._r.zinter(indices, aggregate="MAX", withscores=True))
                      if since is None or t >= since]
            cut = scored[limit - 1][1] if len(scored) >= limit else float("-inf")
            refs = [ref for ref, t in scored if t >= cut]
        return self._audits(refs)[:limit]

    def delete_audit(self, session_id: str, seq_no: int | None = None) -> int:
        """Delete one record, or all of a session's; returns how many were deleted."""
        session = self._k("audit_index", "session", session_id)
        seqs = [seq_no] if seq_no is not None else [int(s) for s in self._r.zrange(session, 0, -1)]
        if not seqs:
            return 0
        records = dict(zip(seqs, self._r.mget([self._k("audit", session_id, s) for s in seqs])))
        pipe = self._r.pipeline(transaction=True)
        for seq, body in records.items():
            pipe.zrem(session, str(seq))
            if body is None:
                continue
            ref = f"{_esc(session_id)}:{seq}"
            for index in self._audit_indices(AuditRecord.model_validate_json(body)):
                pipe.zrem(index, ref)
            pipe.delete(self._k("audit", session_id, seq))
        pipe.execute()
        return sum(body is not None for body in records.values())
