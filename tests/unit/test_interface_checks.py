"""The CLI and the client check what they are given before anything connects: a wrong command line or
argument gets a clear error (exit 2 from the CLI), whether or not a cluster runs.

Findings of a review of the interface, each closed."""

from __future__ import annotations

import pytest

import scheduler.client as client_module
from policies.validation import InvalidRequest
from scheduler.cli import main
from scheduler.identity import generate_key, public_key_b64
from tests.head_in_process import InProcessClient, ThreadedHead

GOOD = "policies/examples/timebank.json"
PUB = public_key_b64(generate_key())
SUBMIT = ["job", "submit", "math:factorial", "--coop", "c", "--member", "m"]
JOIN = ["executor", "join", "--id", "e", "--coop", "c"]


# ---------------------------------------------------------------- F1: bad values found only at the head
@pytest.mark.parametrize("argv, says", [
    (SUBMIT + ["--cpus", "-1"], "resources.cpus"),
    (SUBMIT + ["--priority", "urgent"], "priority"),
    (SUBMIT + ["--max-runtime", "nan"], "max_runtime_s"),
    (SUBMIT + ["--tag", ""], "tags"),
    (["job", "submit", "math:pi", "--coop", "c", "--member", "m"], "fn"),
    (SUBMIT + ["--wait", "--timeout", "nan"], "--timeout"),
    (JOIN + ["--trust", "1.5"], "trust"),
    (JOIN + ["--dispatch-ahead", "99"], "dispatch_ahead"),
    (JOIN + ["--capability", "cuda=latest"], "capabilities"),
    (JOIN + ["--executor-key", "/nonexistent/e.key"], "--executor-key"),
    (["executor", "set-trust", "e", "1.5"], "trust"),
    (["--key", "/nonexistent/alice.key", "job", "list"], "key"),
    (["keys", "add", "--coop", "c", "--role", "member", "--id", "m", "notakey"], "PUBKEY"),
    (["changes", "--limit", "-1"], "--limit"),
    (["policy", "set", "--dry-run", "--last", "0", GOOD], "--last"),
    (["policy", "mgmt", "c", "r", "reset", "--data", "[1]"], "--data"),
    (["quota", "set", "c", "m", "--cpu-hours", "-1"], "cpu_hours"),
    (["quota", "limit", "c", "m", "--cpu-hours-per-month", "nan"], "cpu_hours_per_month"),
    (["start", "--dev", "--metrics-port", "70000"], "--metrics-port"),
    (["start", "--operator-key", PUB, "--auth-window", "-5"], "--auth-window"),
    (["start", "--dev", "--auth-window", "5"], "--auth-window"),
    (["start", "--dev", "--borrowing-half-life", "-60"], "--borrowing-half-life"),
    (["start", "--dev", "--borrowing-half-life", "inf"], "--borrowing-half-life"),
])
def test_a_wrong_value_is_exit_2_with_no_cluster(no_cluster, capsys, argv, says):
    """README: exit 2 for bad input, 'checked before connecting, so a wrong command line says so even with no
    cluster running'. These said 'no running Ray cluster found' (exit 1): the check was the head's."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and says in err and "no running Ray cluster" not in err, (code, err)


# ---------------------------------------------------------------- F2..F5: tracebacks and wrong messages
@pytest.mark.parametrize("target", ["..:x", ".mod:f"])
def test_a_relative_module_is_a_usage_error_not_a_traceback(target, capsys):
    assert main(["job", "submit", target, "--coop", "c", "--member", "m"]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err


def test_a_policy_nested_too_deep_is_invalid_not_a_recursion_error(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text('{"coop_id": "c", "description": ' + "[" * 5000 + "]" * 5000 + "}")
    assert main(["policy", "validate", str(deep)]) == 2
    assert "is not valid" in capsys.readouterr().err


def test_keys_new_into_a_file_says_it_is_not_a_directory(tmp_path, capsys):
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    assert main(["keys", "new", "--out", str(a_file), "--name", "k"]) == 2
    err = capsys.readouterr().err
    assert "never overwritten" not in err and "directory" in err, err  # it said 'plain/k.key exists'


@pytest.mark.parametrize("argv", [["audit", "get"], ["audit", "get", "c/m"], ["audit", "latest"], ["audit", "delete"]])
def test_audit_actions_that_need_a_session_say_so(no_cluster, capsys, argv):
    """`audit get` answered 'no audit record for session None' (exit 1), `audit delete` 'deleted 0' (exit 0)."""
    assert main(argv) == 2
    assert "SESSION" in capsys.readouterr().err


# ---------------------------------------------------------------- F6: Client.local starts Ray before checking
@pytest.mark.parametrize("kwargs, field", [({"auth": "maybe"}, "mode"), ({"auth_window_s": -1, "key": generate_key()},
                                                                       "window_s"),
                                           ({"auth": "signed", "operator_key": "not-a-key"}, "operator_key")])
def test_client_local_checks_auth_settings_before_starting_ray(monkeypatch, kwargs, field):
    def init(*args, **kw):
        raise AssertionError("ray.init called before the arguments were checked")
    monkeypatch.setattr(client_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(client_module.ray, "init", init)
    with pytest.raises(InvalidRequest) as caught:
        client_module.Client.local(store="memory://", **kwargs)
    assert field in str(caught.value)


# ---------------------------------------------------------------- F7, F8: register_executor and keys
class _Recorder(client_module.Client):
    def __init__(self):  # no Ray
        self.namespace, self._key, self.public_key, self.dev_mode, self._labelled = "x", None, None, None, True
        self.sent = []

    def _call(self, method, *args, **kwargs):
        self.sent.append((method, args, kwargs))
        return args[0]


@pytest.fixture
def one_node(monkeypatch):
    class Ctx:
        def get_node_id(self):
            return "n1"
    monkeypatch.setattr(client_module.ray, "get_runtime_context", lambda: Ctx())
    monkeypatch.setattr(client_module.ray, "nodes", lambda: [{"NodeID": "n1", "Alive": True, "Labels": {},
                                                              "Resources": {"CPU": 2.0}}])
    monkeypatch.setattr(client_module.ray, "get_actor", lambda *a, **k: object())  # its worker runs already
    return _Recorder()


def test_open_to_one_coop_as_a_string_is_not_split_into_letters(one_node):
    """open_to="timebank:seattle" opened the executor to coops 't', 'i', 'm', ... (list() of a string)."""
    with pytest.raises(InvalidRequest, match="open_to"):
        one_node.register_executor("e", coop="c", region="r", open_to="timebank:seattle")
    assert one_node.sent == []


def test_a_missing_executor_key_file_is_invalid_request_naming_the_field(one_node):
    """It was a bare ValueError (and in `coopsched executor join --executor-key`, a traceback)."""
    with pytest.raises(InvalidRequest, match="executor_key"):
        one_node.register_executor("e", coop="c", region="r", executor_key="/nonexistent/e.key")


def test_a_key_of_the_wrong_type_is_invalid_request():
    with pytest.raises(InvalidRequest, match="key"):  # was TypeError from pathlib
        client_module.Client(key=5, _connect=False)


# ---------------------------------------------------------------- F9: submit/map/gather arguments
def test_map_names_an_unknown_option():
    with pytest.raises(InvalidRequest, match="timeout"):  # was TypeError: Client._task() got an unexpected ...
        _Recorder().map(abs, [1], coop="c", member="m", timeout=5)
    with pytest.raises(InvalidRequest, match="kwargs"):  # was: got multiple values for argument 'kwargs'
        _Recorder().map(abs, [1], coop="c", member="m", kwargs={"x": 1})


@pytest.mark.parametrize("kwargs", ["abc", {1: 2}, [("x", 1)]])
def test_submit_kwargs_must_be_a_dict_of_names(kwargs):
    """"abc" was a ValueError from dict(); {1: 2} was sent and failed on the executor ('keywords must be
    strings'), after the job was admitted and charged."""
    client = _Recorder()
    with pytest.raises(InvalidRequest, match="kwargs"):
        client.submit(abs, coop="c", member="m", kwargs=kwargs)
    assert client.sent == []


@pytest.mark.parametrize("handles", [[1, 2], "ab"])
def test_gather_refuses_what_is_not_a_job_handle(handles):
    with pytest.raises(InvalidRequest, match="handles"):  # was AttributeError: ... has no attribute '_started'
        _Recorder().gather(handles)


# ---------------------------------------------------------------- F10, F11: against the real Head in-process
@pytest.fixture
def th():
    threaded = ThreadedHead()
    threaded.call("set_policy", {"coop_id": "c", "default_quota": {"cpu_hours_per_month": 100}})
    yield threaded
    threaded.close()


def test_update_limit_with_no_limits_changes_nothing(th):
    """It wrote a new policy version giving the member a personal copy of the default quota: from then on
    `quota default-limit` no longer reached them. The CLI refuses it; the client did not."""
    client = InProcessClient(th)
    with pytest.raises(InvalidRequest, match="limit"):
        client.update_limit("c", "did:icn:alice")
    with pytest.raises(InvalidRequest, match="limit"):
        client.update_default_limit("c")
    assert client.get_policy("c").member_quotas == {}
    assert len(client.policy_history("c")) == 1


@pytest.mark.parametrize("call, args, field", [
    ("rollback_policy", (["c"], 1), "coop_id"),
    ("rollback_policy", ("c", True), "version"),
    ("rollback_policy", ("c", "1"), "version"),
    ("diff_policy", (["c"],), "coop_id"),
    ("changes", (["c"],), "coop_id"),
    ("audit", ("get", ["c/m"], 1), "session_id"),
    ("audit", ("list", None, None), "bogus"),
])
def test_admin_reads_refuse_bad_ids_naming_the_field(th, call, args, field):
    """These reached SQLite: 'ProgrammingError: Error binding parameter 1: type list is not supported', a
    TypeError from the store for an unknown audit filter; version True rolled back to version 1."""
    client = InProcessClient(th)
    kwargs = {"bogus": 1} if call == "audit" and args[0] == "list" else {}
    with pytest.raises(InvalidRequest, match=field):
        getattr(client, call)(*args, **kwargs)
    assert len(client.policy_history("c")) == 1
