"""The client says clearly what is wrong, at the moment it matters, against the real Head class in-process
(no Ray; tests/head_in_process.py):

- a job whose function or argument cannot be pickled is refused naming that argument, before anything
  is sent (it was cloudpickle's bare TypeError, naming no argument);
- ``Client.local(auth="signed")`` without a key joins a head that already runs (it was refused for want
  of an operator key, a setting only a new head uses);
- ``coopsched job submit MOD:FN`` finds MOD in the current directory, as ``python -m scheduler.cli`` does.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys
import threading

import pytest
from ray import cloudpickle

import scheduler.client as client_module
from policies.validation import InvalidRequest
from scheduler.head_auth import AccessRefused
from scheduler.identity import generate_key, public_key_b64
from tests.head_in_process import InProcessClient, ThreadedHead, cli
from tests.unit.test_head_interleavings import COOP, FakeWorker, add_executor

POLICY = {"coop_id": COOP, "default_quota": {"cpu_hours_per_month": 1000, "max_concurrent_tasks": 100}}
JOB = {"coop": COOP, "member": "alice", "resources": {"cpus": 1}, "max_runtime_s": 60}
LOCK = threading.Lock()


def make_head(**auth) -> ThreadedHead:
    threaded = ThreadedHead(auth=auth or None)
    if auth:
        threaded.head.gate.verifier._forgotten_until = 0  # requests are signed right after the head starts
    return threaded


@pytest.fixture
def th():
    threaded = make_head()
    threaded.call("set_policy", POLICY)
    threaded.do(add_executor(threaded.head, FakeWorker("e1")))
    yield threaded
    threaded.close()


class Holder:
    def __init__(self, conn):
        self.conn = conn


def uses_the_lock(x):
    with LOCK:
        return x


def count_dumps(monkeypatch) -> list:
    calls: list = []
    real = cloudpickle.dumps

    def dumps(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(cloudpickle, "dumps", dumps)
    return calls


# ---------------------------------------------------------------- 1: what cannot be pickled is named
@pytest.mark.parametrize("send, fixed, path, kind", [
    pytest.param(lambda c: c.submit(pow, 2, LOCK, **JOB), lambda c: c.submit(pow, 2, 10, **JOB),
                 "args[1]", "_thread.lock", id="an-argument"),
    pytest.param(lambda c: c.submit(dict, kwargs={"conn": sqlite3.connect(":memory:")}, **JOB),
                 lambda c: c.submit(dict, kwargs={"conn": "data.db"}, **JOB), "kwargs['conn']", "sqlite3.Connection",
                 id="a-keyword-argument"),
    pytest.param(lambda c: c.submit(len, [1, {"a": (2, LOCK)}], **JOB),
                 lambda c: c.submit(len, [1, {"a": (2, 3)}], **JOB), "args[0][1]['a'][1]", "_thread.lock",
                 id="inside-a-list-and-a-dict"),
    pytest.param(lambda c: c.submit(repr, Holder(sqlite3.connect(":memory:")), **JOB),
                 lambda c: c.submit(repr, Holder("data.db"), **JOB), "args[0].conn", "sqlite3.Connection",
                 id="an-objects-attribute"),
    pytest.param(lambda c: c.submit((lambda lock: lambda x: lock)(LOCK), 1, **JOB),
                 lambda c: c.submit(abs, 1, **JOB), "fn (its variable 'lock')", "_thread.lock",
                 id="a-closures-variable"),
    pytest.param(lambda c: c.map(str, [1, 2, LOCK], **JOB), lambda c: c.map(str, [1, 2, 3], **JOB),
                 "iterable[2]", "_thread.lock", id="a-map-item"),
])
def test_what_cannot_be_pickled_is_refused_naming_it_and_nothing_is_submitted(th, monkeypatch, send, fixed, path,
                                                                               kind):
    """cloudpickle's "TypeError: cannot pickle '_thread.lock' object" named no argument (or item, or variable)."""
    client = InProcessClient(th)
    with pytest.raises(InvalidRequest) as caught:
        send(client)
    error = caught.value.errors[0]
    assert error.path == path and kind in error.received and "cannot pickle" in error.received, error
    assert "can be pickled" in error.accepted and error.example, error
    usage = client.usage(COOP, "alice")
    assert client.jobs() == [] and usage.reserved_cpu_hours == usage.cpu_hours == 0  # nothing sent or charged
    pickled = count_dumps(monkeypatch)
    fixed(client)  # the same call, fixed, is submitted; its payload is pickled once per job, as before
    assert len(pickled) == len(client.jobs()) >= 1


def test_a_function_using_an_unpicklable_global_is_named_with_the_global(th):
    """A script's own functions (of ``__main__``) are pickled by value, with the globals they use."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # as a function of __main__ would be
    try:
        with pytest.raises(InvalidRequest, match=r"fn \(the global 'LOCK' it uses\): received <unlocked "
                                                 r"_thread\.lock .*accepted: a value that can be pickled"):
            InProcessClient(th).submit(uses_the_lock, 1, **JOB)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert InProcessClient(th).jobs() == []


# ---------------------------------------------------------------- 2: joining a head needs no new head's settings
class HeadActor:
    """The head as ``Client`` sees its Ray actor: ``head.METHOD.remote(...)`` runs the real method now, and the
    ``ray.get`` of ``joined`` gives back its answer."""

    def __init__(self, th: ThreadedHead) -> None:
        self.th = th

    def __getattr__(self, method: str):
        th = self.th
        return type("Method", (), {"remote": lambda self, *args, **kwargs: th.call(method, *args, **kwargs)})()


def joined(monkeypatch, th: ThreadedHead) -> None:
    """Client.local finds Ray connected and ``th``'s head running (it starts nothing)."""
    def never(*args, **kwargs):
        raise AssertionError("Client.local started something although a head runs")
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(client_module.ray, "get_actor", lambda name, namespace=None: HeadActor(th))
    monkeypatch.setattr(client_module.ray, "get", lambda ref, timeout=None: ref)
    monkeypatch.setattr(client_module, "_started_tracker", lambda namespace, store: None)
    monkeypatch.setattr(client_module, "start_head", never)


def test_client_local_with_auth_signed_and_no_key_joins_a_running_head(monkeypatch):
    """It was refused ('signed mode needs the operator's public key') before looking for a head, although
    the operator's key only matters to a head that Client.local starts."""
    th = make_head()
    try:
        joined(monkeypatch, th)
        client = client_module.Client.local(auth="signed", store="memory://")
        assert client.ping()["executors"] == 0 and client.dev_mode is True  # the head keeps its own mode
    finally:
        th.close()


def test_a_client_without_a_key_that_joins_a_signed_head_is_told_to_give_one_at_its_first_call(monkeypatch):
    th = make_head(mode="signed", operator_key=public_key_b64(generate_key()))
    try:
        joined(monkeypatch, th)
        client = client_module.Client.local(auth="signed", store="memory://")
        with pytest.raises(AccessRefused) as caught:
            client.submit(abs, -1, **JOB)
        assert caught.value.code == "unsigned" and "Client(key=" in caught.value.message
        assert client.dev_mode is False and th.head.core.jobs() == []
    finally:
        th.close()


def test_client_local_with_auth_signed_and_no_operator_is_refused_naming_operator_key_when_no_ray_runs(
        no_cluster, monkeypatch):
    """It was refused naming no field ('(root): received {"mode": "signed", ...}'); now the field, an example,
    and only after looking for a head to join, before starting a local Ray."""
    asked: list = []

    def init(*args, **kwargs):
        asked.append(kwargs.get("address"))
        raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(client_module.ray, "init", init)
    with pytest.raises(InvalidRequest) as caught:
        client_module.Client.local(auth="signed", store="memory://", namespace="never-started")
    error = caught.value.errors[0]
    assert error.path == "operator_key" and "key=" in error.accepted and "auth='dev'" in error.accepted
    assert error.example == 'Client.local(auth="signed", key="operator.key")'
    assert asked == ["auto"]  # it looked for a cluster; it started none


def test_client_local_with_auth_signed_and_no_operator_leaves_a_cluster_without_a_head_as_it_was(monkeypatch):
    """A cluster runs but no head: nothing is started, and the connection made to look is closed again."""
    def never(*args, **kwargs):
        raise AssertionError("started although signed mode has no operator")
    done: list = []
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(client_module.ray, "init", lambda *a, **k: done.append(("init", k.get("address"))))
    monkeypatch.setattr(client_module.ray, "shutdown", lambda: done.append(("shutdown", None)))
    monkeypatch.setattr(client_module, "_head_exists", lambda namespace: False)
    monkeypatch.setattr(client_module, "_started_tracker", never)
    monkeypatch.setattr(client_module, "start_head", never)
    with pytest.raises(InvalidRequest) as caught:
        client_module.Client.local(auth="signed", store="memory://", namespace="no-head")
    assert caught.value.errors[0].path == "operator_key" and "'no-head'" in caught.value.errors[0].received
    assert done == [("init", "auto"), ("shutdown", None)]


# ---------------------------------------------------------------- 3: the CLI resolves MOD:FN from the current directory
def test_job_submit_finds_a_module_in_the_current_directory_as_python_m_does(th, monkeypatch, capsys, tmp_path):
    """The `coopsched` console script's sys.path starts at its bin directory, not the current one: `coopsched
    job submit mymod:fn` said 'cannot find mymod:fn: No module named ...' (only `python -m scheduler.cli` worked)."""
    (tmp_path / "coopsched_cwd_job.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.chdir(tmp_path)
    as_the_console_script = [p for p in sys.path if p not in ("", ".", str(tmp_path))]
    monkeypatch.setattr(sys, "path", as_the_console_script)
    monkeypatch.delitem(sys.modules, "coopsched_cwd_job", raising=False)
    importlib.invalidate_caches()
    try:
        code, out, err = cli(th, monkeypatch, capsys, "job", "submit", "coopsched_cwd_job:double", "--args", "[21]",
                             "--coop", COOP, "--member", "alice", "--cpus", "1", "--max-runtime", "60")
    finally:
        sys.modules.pop("coopsched_cwd_job", None)
    assert code == 0, err
    assert th.head.core.job(out.strip()) is not None
    assert sys.path == as_the_console_script  # the directory was on sys.path for resolving the function only
