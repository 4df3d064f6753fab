"""The Python client's own checks and waits, against the real Head class in-process (no Ray): timeouts
of result() and gather(), bad ids on the read calls, map's options, cancel of a job the core forgot.
The worker is a stand-in (tests/unit/test_head_interleavings.py); its result references are strings,
so ``ray.get`` is replaced to give the job's value."""

from __future__ import annotations

import math

import pytest

import scheduler.client as client_module
from policies.validation import InvalidRequest
from tests.head_in_process import InProcessClient, ThreadedHead, handle
from tests.unit.test_head_interleavings import COOP, FakeWorker, add_executor, report, settle, task

POLICY = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 100}}


@pytest.fixture
def th():
    threaded = ThreadedHead()
    threaded.call("set_policy", POLICY)
    threaded.do(add_executor(threaded.head, FakeWorker("e1")))
    yield threaded
    threaded.close()


@pytest.fixture
def finished_a(th, monkeypatch):
    """Job "A" has succeeded; fetching its value gives 42."""
    monkeypatch.setattr(client_module.ray, "get", lambda ref, timeout=None: [42] * len(ref)
                        if isinstance(ref, list) else 42)
    th.do(th.head.submit(task("A"), b"a"))
    th.do(settle())
    th.do(th.head.on_reports([report("A", "e1", 1)]))
    assert th.head.core.job("A").state.value == "succeeded"
    return InProcessClient(th)


def test_a_finished_jobs_value_is_returned_with_timeout_zero(finished_a):
    """timeout=0 raised TimeoutError before asking at all (Future.result(0) and ray.get(timeout=0) return a
    value that is ready); and a wait of 0 s left was asked of the head as a wait of 30 s."""
    assert handle(finished_a, "A", COOP).result(timeout=0) == 42
    assert finished_a.gather([handle(finished_a, "A", COOP)], timeout=0) == [42]


@pytest.mark.parametrize("bad", ["5", math.nan, -1, math.inf, True, [5]])
def test_a_bad_timeout_is_refused_naming_the_field(finished_a, bad):
    """timeout="5" died in the deadline arithmetic (TypeError); nan timed out at once ("not finished after
    nan s" for a finished job)."""
    with pytest.raises(InvalidRequest, match=r"timeout: received .*accepted: seconds to wait"):
        handle(finished_a, "A", COOP).result(timeout=bad)
    with pytest.raises(InvalidRequest, match="timeout"):
        finished_a.gather([handle(finished_a, "A", COOP)], timeout=bad)


@pytest.mark.parametrize("call, args, field", [
    ("usage", (COOP, ["did:icn:alice"]), "member"),
    ("usage", (COOP, 5), "member"),
    ("get_policy", ([COOP],), "coop_id"),
    ("remove_policy", ([COOP],), "coop_id"),
    ("policy_history", ([COOP],), "coop_id"),
    ("jobs", ([COOP],), "coop_id"),
    ("members", (7,), "coop_id"),
], ids=["usage-member-list", "usage-member-int", "get-policy", "remove-policy", "history", "jobs", "members"])
def test_read_calls_refuse_bad_ids_naming_the_field(finished_a, call, args, field):
    """The ids went unchecked to the core and the store: a list came back as sqlite's ProgrammingError or
    'unhashable type', an int as pydantic's error about UsageRecord."""
    with pytest.raises(InvalidRequest, match=rf"{field}: received"):
        getattr(finished_a, call)(*args)
    assert finished_a.usage(COOP, "alice").tasks_completed == 1  # nothing else moved


@pytest.mark.parametrize("call", ["status", "explain", "cancel"])
def test_job_calls_refuse_a_bad_job_id(finished_a, call):
    with pytest.raises(InvalidRequest, match="task_id: received"):
        finished_a._call(call, ["A"])


def test_map_refuses_one_task_id_for_every_item(finished_a):
    """map(..., task_id=X) gave every item the same id: the head answered items 2..n with item 1's decision,
    and gather returned item 1's value n times."""
    with pytest.raises(InvalidRequest, match="task_id.*each item a job id of its own"):
        finished_a.map(abs, [-1, -2, -3], coop=COOP, member="alice", resources={"cpus": 1}, max_runtime_s=60,
                       task_id="batch-7")


def test_cancel_of_a_finished_job_the_core_forgot_answers_its_state(th):
    """cancel() answered a finished job's state while the core held it, but None (as for an unknown id) once
    only the store did (after KEEP_FINISHED_JOBS newer jobs, or a restart): `job cancel ID` printed 'None'."""
    th.head.keep_finished_jobs = 0
    th.do(th.head.submit(task("A"), b"a"))
    th.do(settle())
    th.do(th.head.on_reports([report("A", "e1", 1)]))
    client = InProcessClient(th)
    assert th.head.core.job("A") is None
    assert handle(client, "A", COOP).cancel() == "succeeded"
    assert handle(client, "nope", COOP).cancel() is None


@pytest.mark.parametrize("kwargs, field", [({"store": "bogus://nowhere"}, "url"),
                                           ({"key": "/nonexistent/alice.key"}, "key")],
                         ids=["bad-store-url", "missing-key-file"])
def test_client_local_refuses_bad_arguments_before_starting_anything(kwargs, field):
    """A bad store URL ended in Ray's ActorDiedError (the head's creation failed) and a missing key file in
    a plain ValueError, each after the tracker had started; now both are refused first, naming the field."""
    import ray
    was = ray.is_initialized()
    with pytest.raises(InvalidRequest) as caught:
        client_module.Client.local(namespace=f"never-started-{field}", **kwargs)
    assert caught.value.errors[0].path == field
    assert ray.is_initialized() == was  # nothing was started


def test_listings_refuse_a_negative_limit(finished_a):
    """SQLite read a negative limit as 'all', Redis as 'none': the head refuses it, naming the field."""
    with pytest.raises(InvalidRequest, match="limit: received -1"):
        finished_a.changes(None, -1)
    with pytest.raises(InvalidRequest, match="limit: received -1"):
        finished_a._call("jobs", None, None, None, -1)
    with pytest.raises(InvalidRequest, match="limit: received"):
        finished_a.audit("list", None, None, limit=-5)
    assert finished_a.changes(None, 1)  # (one row: the policy set above)


def _scripted_client(monkeypatch, answers: list) -> tuple:
    """The real ``Client._call`` against a stand-in head that answers ``answers`` in turn (no Ray)."""
    from scheduler.identity import generate_key
    c = client_module.Client.__new__(client_module.Client)
    c._key, c.dev_mode, c._labelled = generate_key(), None, True
    signed: list = []

    class Method:
        def remote(self, *args, _request=None, **kwargs):
            signed.append(_request["signed"])
            return answers.pop(0)

    c.head = type("Head", (), {"ping": Method()})()
    monkeypatch.setattr(client_module.ray, "get", lambda ref: ref)
    return c, signed


def test_a_request_refused_as_signed_before_the_head_restarted_is_signed_again(monkeypatch):
    restarted = {"refused": {"code": "expired", "message": "request 'ping' was signed at 1.000, before this head "
                             "(re)started, so it cannot be told from a replay; ..."}, "dev_mode": False}
    c, signed = _scripted_client(monkeypatch, [restarted, {"ok": "pong", "dev_mode": False}])
    assert c._call("ping") == "pong"
    assert len(signed) == 2 and signed[0]["nonce"] != signed[1]["nonce"]  # signed afresh


def test_other_refusals_are_not_retried(monkeypatch):
    from scheduler.head_auth import AccessRefused
    forged = {"refused": {"code": "forged", "message": "the signature does not match"}, "dev_mode": False}
    c, signed = _scripted_client(monkeypatch, [forged, {"ok": "pong", "dev_mode": False}])
    with pytest.raises(AccessRefused, match="forged"):
        c._call("ping")
    assert len(signed) == 1


def test_a_refusal_for_a_full_replay_cache_is_answered_at_once(monkeypatch):
    """Signing again cannot help a client whose clock lags the head's cache turnover: no retry loop."""
    from scheduler.head_auth import AccessRefused
    full = {"refused": {"code": "expired", "message": "request 'ping' was signed at 1.000, before the oldest "
                        "request this head still remembers (its replay cache is full, ...)"}, "dev_mode": False}
    c, signed = _scripted_client(monkeypatch, [full, {"ok": "pong", "dev_mode": False}])
    with pytest.raises(AccessRefused, match="oldest request"):
        c._call("ping")
    assert len(signed) == 1


def test_a_restart_refusal_is_signed_again_for_a_few_seconds_only(monkeypatch):
    import scheduler.client as client_module
    restarted = {"refused": {"code": "expired", "message": "request 'ping' was signed at 1.000, before this head "
                             "(re)started, so it cannot be told from a replay; ..."}, "dev_mode": False}
    monkeypatch.setattr(client_module, "RESIGN_WAIT_S", 0.2)
    c, signed = _scripted_client(monkeypatch, [restarted] * 100)
    from scheduler.head_auth import AccessRefused
    with pytest.raises(AccessRefused, match="re\\)started"):
        c._call("ping")
    assert 2 <= len(signed) < 20


def test_a_coops_usage_together_comes_through_the_client_and_a_bad_coop_id_is_refused(finished_a, th):
    th.call("set_policy", {**POLICY, "coop_quota": {"cpu_hours_per_month": 50}})
    together = finished_a.coop_usage(COOP)
    member = finished_a.usage(COOP, th.head.core.task("A").member)
    assert together.tasks_completed == 1 and together.cpu_hours == member.cpu_hours > 0
    assert together.quota.cpu_hours_per_month == 50
    with pytest.raises(InvalidRequest, match="coop_id"):
        finished_a.coop_usage("")


def test_a_member_reads_its_running_jobs_checkpoint_raw_or_loaded_and_none_once_it_finished(th):
    from ray import cloudpickle
    th.do(th.head.submit(task("C"), b"c"))
    th.do(settle())
    token = th.head._checkpoint_token("C", 1)
    assert th.do(th.head.save_checkpoint("C", 1, token, cloudpickle.dumps({"epoch": 7})))["saved"] > 0
    h = handle(InProcessClient(th), "C", COOP)
    raw = h.checkpoint()
    assert (raw["attempt"], raw["bytes"]) == (1, len(raw["data"])) and h.checkpoint(load=True) == {"epoch": 7}
    th.do(th.head.on_reports([report("C", "e1", 1)]))
    assert h.checkpoint() is None and h.checkpoint(load=True) is None
    assert handle(InProcessClient(th), "never-submitted", COOP).checkpoint() is None
