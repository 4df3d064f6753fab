"""Signed requests and who may do what: table-driven, pure (no Ray, no store), on an injected clock."""

from __future__ import annotations

import hashlib
import stat
import time
from dataclasses import dataclass, field

import pytest

from policies.validation import InvalidRequest
from scheduler.authorization import authorize, narrow, visible
from scheduler.identity import (Principal, RefusalCode, RequestVerifier, Role, generate_key, key_id_of,
                                load_private_key, private_key_pem, public_key_b64, read_public_key, save_key_pair,
                                sign_request)

NOW = 1_795_000_000.0


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_principal(key, role: str = "member", coop: str | None = "coop:a", subject: str = "alice") -> Principal:
    return Principal(public_key=public_key_b64(key), role=role, coop_id=coop, subject=subject)


ALICE, MALLORY, UNKNOWN = generate_key(), generate_key(), generate_key()
ARGS = ({"coop_id": "coop:a", "member": "alice", "resources": {"cpus": 1}}, b"pickled payload", [])


def verifier(clock: Clock, **kw) -> RequestVerifier:
    principals = [make_principal(ALICE), make_principal(MALLORY, subject="mallory")]
    return RequestVerifier({p.key_id: p for p in principals}, clock=clock, **kw)


def _signed(key=ALICE, method="submit", args=ARGS, at=NOW, nonce=None):
    return sign_request(key, method, args, {}, now=at, nonce=nonce)


def _tamper(envelope: dict, **changes) -> dict:
    return {**envelope, **changes}


CASES = [
    # name, what is sent (method, args, envelope), the refusal code (None: accepted)
    ("valid signature", lambda: ("submit", ARGS, _signed()), None),
    ("unsigned", lambda: ("submit", ARGS, None), RefusalCode.UNSIGNED),
    ("malformed envelope", lambda: ("submit", ARGS, {"key_id": "k"}), RefusalCode.UNSIGNED),
    ("altered argument", lambda: ("submit", ({**ARGS[0], "member": "bob"}, *ARGS[1:]), _signed()),
     RefusalCode.FORGED),
    ("altered payload bytes", lambda: ("submit", (ARGS[0], b"other payload", []), _signed()), RefusalCode.FORGED),
    ("other method", lambda: ("cancel", ARGS, _signed()), RefusalCode.FORGED),
    ("signed by another registered key", lambda: ("submit", ARGS, _tamper(
        _signed(key=MALLORY), key_id=key_id_of(public_key_b64(ALICE)))), RefusalCode.FORGED),
    ("timestamp moved after signing", lambda: ("submit", ARGS, _tamper(_signed(), timestamp=NOW + 1)),
     RefusalCode.FORGED),
    ("unknown key", lambda: ("submit", ARGS, _signed(key=UNKNOWN)), RefusalCode.UNKNOWN_KEY),
    ("expired: 61 s old", lambda: ("submit", ARGS, _signed(at=NOW - 61)), RefusalCode.EXPIRED),
    ("expired: 61 s ahead", lambda: ("submit", ARGS, _signed(at=NOW + 61)), RefusalCode.EXPIRED),
    ("59 s old is inside the window", lambda: ("submit", ARGS, _signed(at=NOW - 59)), None),
]


@pytest.mark.parametrize("name, request_, want", CASES, ids=[c[0] for c in CASES])
def test_verification(name, request_, want):
    method, args, envelope = request_()
    answer = verifier(Clock()).verify(method, args, {}, envelope)
    if want is None:
        assert isinstance(answer, Principal) and answer.subject == "alice"
    else:
        assert answer.code is want, answer
        assert "; " in answer.message  # every refusal says how to fix it


def test_replayed_nonce_is_refused_and_a_fresh_one_passes():
    v = verifier(Clock())
    envelope = _signed(nonce="n" * 16)
    assert isinstance(v.verify("submit", ARGS, {}, envelope), Principal)
    assert v.verify("submit", ARGS, {}, envelope).code is RefusalCode.REPLAYED
    assert isinstance(v.verify("submit", ARGS, {}, _signed()), Principal)


def test_a_replay_after_the_window_is_expired_not_accepted():
    clock = Clock()
    v = verifier(clock, window_s=10)
    envelope = _signed()
    assert isinstance(v.verify("submit", ARGS, {}, envelope), Principal)
    clock.now += 11
    assert v.verify("submit", ARGS, {}, envelope).code is RefusalCode.EXPIRED
    assert v.nonces_held() <= 1


def test_a_full_nonce_cache_never_lets_a_replay_through():
    v = verifier(Clock(), max_nonces=3)
    sent = [_signed(at=NOW - 5 + i) for i in range(5)]
    for envelope in sent:
        assert isinstance(v.verify("submit", ARGS, {}, envelope), Principal)
    assert v.nonces_held() == 3
    for envelope in sent:  # evicted ones are refused as expired, remembered ones as replayed
        assert v.verify("submit", ARGS, {}, envelope).code in (RefusalCode.EXPIRED, RefusalCode.REPLAYED)


def test_nothing_signed_before_the_verifier_started_is_accepted():
    """A restarted head's nonce cache is empty: a request made to the previous one must not replay."""
    v = RequestVerifier({make_principal(ALICE).key_id: make_principal(ALICE)}, clock=Clock(), not_before=NOW - 1)
    assert v.verify("submit", ARGS, {}, _signed(at=NOW - 2)).code is RefusalCode.EXPIRED
    assert isinstance(v.verify("submit", ARGS, {}, _signed(at=NOW - 0.5)), Principal)


def test_freshness_can_be_skipped_for_idempotent_usage_reports():
    v = verifier(Clock())
    envelope = _signed(method="report", args=({"task_id": "t"},), at=NOW - 3600)
    assert isinstance(v.verify("report", ({"task_id": "t"},), {}, envelope, check_freshness=False), Principal)
    assert isinstance(v.verify("report", ({"task_id": "t"},), {}, envelope, check_freshness=False), Principal)
    assert v.verify("report", ({"task_id": "u"},), {}, envelope, check_freshness=False).code is RefusalCode.FORGED


def test_removed_key_is_unknown():
    v = verifier(Clock())
    v.remove(key_id_of(public_key_b64(ALICE)))
    assert v.verify("submit", ARGS, {}, _signed()).code is RefusalCode.UNKNOWN_KEY


def test_saving_a_key_pair_overwrites_neither_half_and_leaves_no_lone_half(tmp_path):
    public = tmp_path / "bob.pub"
    public.write_text("someone else's public key\n")  # a lone NAME.pub: e.g. registered, its key elsewhere
    with pytest.raises(FileExistsError):
        save_key_pair(generate_key(), tmp_path, "bob")
    assert public.read_text() == "someone else's public key\n" and not (tmp_path / "bob.key").exists()
    (tmp_path / "carol.key").write_text("a private key kept here\n")  # a lone NAME.key
    with pytest.raises(FileExistsError):
        save_key_pair(generate_key(), tmp_path, "carol")
    assert not (tmp_path / "carol.pub").exists() and (tmp_path / "carol.key").read_text() == "a private key kept here\n"


def test_key_files(tmp_path):
    key = generate_key()
    private, public = save_key_pair(key, tmp_path, "alice")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public_key_b64(load_private_key(private)) == public.read_text().strip() == public_key_b64(key)
    assert read_public_key(public) == read_public_key(private) == read_public_key(public_key_b64(key))
    with pytest.raises(FileExistsError):
        save_key_pair(generate_key(), tmp_path, "alice")  # never overwrites a key
    with pytest.raises(ValueError, match="keys new"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(ValueError, match="base64"):
        read_public_key("not-a-key")


def test_principal_validation_names_what_is_wrong():
    with pytest.raises(ValueError, match="coop_id"):
        Principal(public_key=public_key_b64(ALICE), role="member", subject="alice")
    with pytest.raises(ValueError, match="32 bytes"):
        Principal(public_key="AAAA", role="member", coop_id="c", subject="alice")
    assert Principal(public_key=public_key_b64(ALICE), role="operator", subject="op").coop_id is None


# ----------------------------------------------------------------------------- authorization
@dataclass
class Facts:
    jobs: dict = field(default_factory=lambda: {"ja": ("coop:a", "alice"), "jb": ("coop:a", "bob"),
                                                "jx": ("coop:b", "xavier")})
    execs: dict = field(default_factory=lambda: {"ea": "coop:a", "eb": "coop:b"})
    keys: dict = field(default_factory=dict)

    def job_owner(self, task_id):
        return self.jobs.get(task_id)

    def executor_coop(self, executor_id):
        return self.execs.get(executor_id)

    def key_owner(self, key_id):
        return self.keys.get(key_id)


def who(role: str, coop: str | None = "coop:a", subject: str = "alice") -> Principal:
    return make_principal(generate_key(), role=role, coop=coop, subject=subject)


MEMBER, ADMIN_A, EXECUTOR_A, OPERATOR = who("member"), who("admin", subject="ann"), who("executor", subject="ea"), \
    who("operator", None, "op")
TASK = {"coop_id": "coop:a", "member": "alice"}
FACTS = Facts()
BOB_KEY = make_principal(generate_key(), subject="bob")
ADMIN_B_KEY = make_principal(generate_key(), role="admin", coop="coop:b", subject="bea")
FACTS.keys = {BOB_KEY.key_id: BOB_KEY, ADMIN_B_KEY.key_id: ADMIN_B_KEY}


def _key(role, coop):
    return {"public_key": public_key_b64(generate_key()), "role": role, "coop_id": coop, "subject": "x"}


AUTHZ = [
    # name, principal, method, args by name, allowed
    ("member submits as itself", MEMBER, "submit", {"task": TASK}, True),
    ("member cannot submit as another member", MEMBER, "submit", {"task": {**TASK, "member": "bob"}}, False),
    ("member cannot submit to another coop", MEMBER, "submit", {"task": {**TASK, "coop_id": "coop:b"}}, False),
    ("one foreign item refuses the batch", MEMBER, "submit_many",
     {"items": [(TASK, b"", []), ({**TASK, "member": "bob"}, b"", [])]}, False),
    ("member batch as itself", MEMBER, "submit_many", {"items": [(TASK, b"", [])] * 2}, True),
    ("admin does not submit", ADMIN_A, "submit", {"task": TASK}, False),
    ("member reads its own job", MEMBER, "status", {"task_id": "ja"}, True),
    ("member waits for its own result", MEMBER, "wait_result", {"task_id": "ja"}, True),
    ("member waits for its own results", MEMBER, "wait_results", {"task_ids": ["ja", "ja"]}, True),
    ("one foreign job refuses the wait", MEMBER, "wait_results", {"task_ids": ["ja", "jb"]}, False),
    ("a wait for ids not in a list is refused", MEMBER, "wait_results", {"task_ids": "ja"}, False),
    ("admin waits for its coop's results", ADMIN_A, "wait_results", {"task_ids": ["ja", "jb"]}, True),
    ("member cannot read another's job", MEMBER, "status", {"task_id": "jb"}, False),
    ("member reads its own job's checkpoint", MEMBER, "checkpoint", {"task_id": "ja"}, True),
    ("member cannot read another's checkpoint", MEMBER, "checkpoint", {"task_id": "jb"}, False),
    ("member cannot cancel another's job", MEMBER, "cancel", {"task_id": "jb"}, False),
    ("member cannot explain another coop's job", MEMBER, "explain", {"task_id": "jx"}, False),
    ("unknown job is refused, not leaked", MEMBER, "status", {"task_id": "nope"}, False),
    ("member reads its own usage", MEMBER, "usage", {"coop_id": "coop:a", "member": "alice"}, True),
    ("member cannot read another's usage", MEMBER, "usage", {"coop_id": "coop:a", "member": "bob"}, False),
    ("member lists its own jobs", MEMBER, "jobs", {"coop_id": None, "member": None}, True),
    ("member cannot list another's jobs", MEMBER, "jobs", {"coop_id": "coop:a", "member": "bob"}, False),
    ("member cannot set a policy", MEMBER, "set_policy", {"policy": {"coop_id": "coop:a"}}, False),
    ("member reads its coop's policy", MEMBER, "get_policy", {"coop_id": "coop:a"}, True),
    ("member cannot read another coop's policy", MEMBER, "get_policy", {"coop_id": "coop:b"}, False),
    ("member cannot register keys", MEMBER, "add_key", {"principal": _key("member", "coop:a")}, False),
    ("admin reads any job of its coop", ADMIN_A, "status", {"task_id": "jb"}, True),
    ("admin cannot read another coop's job", ADMIN_A, "status", {"task_id": "jx"}, False),
    ("admin sets its coop's policy", ADMIN_A, "set_policy", {"policy": {"coop_id": "coop:a"}}, True),
    ("admin of A cannot set B's policy", ADMIN_A, "set_policy", {"policy": {"coop_id": "coop:b"}}, False),
    ("admin of A cannot remove B's policy", ADMIN_A, "remove_policy", {"coop_id": "coop:b"}, False),
    ("admin of A cannot roll back B's policy", ADMIN_A, "rollback_policy", {"coop_id": "coop:b", "version": 1},
     False),
    ("admin of A cannot manage B's plug-ins", ADMIN_A, "plugin_management", {"coop_id": "coop:b"}, False),
    ("admin manages its coop's quotas", ADMIN_A, "quota", {"action": "reset_quota", "coop_id": "coop:a"}, True),
    ("admin of A cannot change B's quotas", ADMIN_A, "quota", {"action": "set_quota", "coop_id": "coop:b"}, False),
    ("member reads its own quota", MEMBER, "quota", {"action": "get_quota", "coop_id": "coop:a", "member": "alice"},
     True),
    ("member cannot reset its quota", MEMBER, "quota", {"action": "reset_quota", "coop_id": "coop:a",
                                                        "member": "alice"}, False),
    ("admin registers its coop's executor", ADMIN_A, "register_executor", {"spec": {"coop_id": "coop:a"}}, True),
    ("admin of A cannot register B's executor", ADMIN_A, "register_executor", {"spec": {"coop_id": "coop:b"}},
     False),
    ("admin drains its executor", ADMIN_A, "drain", {"executor_id": "ea"}, True),
    ("admin of A cannot drain B's executor", ADMIN_A, "drain", {"executor_id": "eb"}, False),
    ("admin of A cannot remove B's executor", ADMIN_A, "remove_executor", {"executor_id": "eb"}, False),
    ("admin of A cannot set B's executor's trust", ADMIN_A, "set_trust", {"executor_id": "eb", "trust": 1.0}, False),
    ("admin registers a member key of its coop", ADMIN_A, "add_key", {"principal": _key("member", "coop:a")}, True),
    ("admin cannot register a key for coop B", ADMIN_A, "add_key", {"principal": _key("member", "coop:b")}, False),
    ("admin cannot register admin keys", ADMIN_A, "add_key", {"principal": _key("admin", "coop:a")}, False),
    ("admin removes a member key of its coop", ADMIN_A, "remove_key", {"key_id": BOB_KEY.key_id}, True),
    ("admin cannot remove another coop's admin", ADMIN_A, "remove_key", {"key_id": ADMIN_B_KEY.key_id}, False),
    ("admin reads its coop's audit", ADMIN_A, "audit", {"action": "get", "session_id": "coop:a/alice"}, True),
    ("admin cannot read B's audit", ADMIN_A, "audit", {"action": "get", "session_id": "coop:b/x"}, False),
    ("admin cannot call operator-only methods", ADMIN_A, "no_such_method", {}, False),
    ("member reads its coop's usage together", MEMBER, "coop_usage", {"coop_id": "coop:a"}, True),
    ("member cannot read another coop's usage", MEMBER, "coop_usage", {"coop_id": "coop:b"}, False),
    ("admin reads its coop's usage together", ADMIN_A, "coop_usage", {"coop_id": "coop:a"}, True),
    ("executor cannot read a coop's usage", EXECUTOR_A, "coop_usage", {"coop_id": "coop:a"}, False),
    ("executor heartbeats for itself", EXECUTOR_A, "heartbeat", {"offer": {"executor_id": "ea"}}, True),
    ("executor cannot heartbeat for another", EXECUTOR_A, "heartbeat", {"offer": {"executor_id": "eb"}}, False),
    ("executor reports for itself", EXECUTOR_A, "report", {"report": {"executor_id": "ea"}}, True),
    ("executor cannot report for another", EXECUTOR_A, "report", {"report": {"executor_id": "eb"}}, False),
    ("executor cannot submit", EXECUTOR_A, "submit", {"task": TASK}, False),
    ("operator registers an admin key", OPERATOR, "add_key", {"principal": _key("admin", "coop:b")}, True),
    ("operator sets any policy", OPERATOR, "set_policy", {"policy": {"coop_id": "coop:b"}}, True),
    ("any key may ping", EXECUTOR_A, "ping", {}, True),
    ("member sees its own places in the queue", MEMBER, "queue", {"coop_id": None, "member": None}, True),
    ("member cannot see another member's places", MEMBER, "queue", {"coop_id": "coop:a", "member": "bob"}, False),
    ("admin sees its coop's queue", ADMIN_A, "queue", {"coop_id": None, "member": None}, True),
    ("admin of A cannot see B's queue", ADMIN_A, "queue", {"coop_id": "coop:b", "member": None}, False),
    ("executor cannot read the queue", EXECUTOR_A, "queue", {"coop_id": None, "member": None}, False),
]


@pytest.mark.parametrize("name, principal, method, args, allowed", AUTHZ, ids=[c[0] for c in AUTHZ])
def test_authorization(name, principal, method, args, allowed):
    refusal = authorize(principal, method, args, FACTS)
    if allowed:
        assert refusal is None, refusal
    else:
        assert refusal is not None and refusal.code is RefusalCode.FORBIDDEN
        assert principal.describe() in refusal.message


def test_open_listings_are_narrowed_to_the_caller():
    assert narrow(MEMBER, "jobs", {"coop_id": None, "member": None}) == {"coop_id": "coop:a", "member": "alice"}
    assert narrow(ADMIN_A, "jobs", {"coop_id": None, "member": "bob"}) == {"coop_id": "coop:a", "member": "bob"}
    assert narrow(ADMIN_A, "changes", {"coop_id": None}) == {"coop_id": "coop:a"}
    assert narrow(MEMBER, "queue", {"coop_id": None, "member": None, "limit": 5}) == {
        "coop_id": "coop:a", "member": "alice", "limit": 5}
    assert narrow(ADMIN_A, "queue", {"coop_id": None, "member": None}) == {"coop_id": "coop:a", "member": None}
    assert narrow(OPERATOR, "jobs", {"coop_id": None, "member": None}) == {"coop_id": None, "member": None}
    assert narrow(ADMIN_A, "audit", {"action": "list", "session_id": None, "filters": {}})["filters"] == {
        "coop_id": "coop:a"}
    listing = [{"coop_id": "coop:a"}, {"coop_id": "coop:b"}]
    assert visible(ADMIN_A, "executors", listing) == [{"coop_id": "coop:a"}]
    assert visible(OPERATOR, "executors", listing) == listing
    assert Role.MEMBER.value == "member"


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80) |
                     st.binary(max_size=40), lambda inner: st.lists(inner, max_size=4) |
                     st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
_envelopes = st.one_of(_junk, st.fixed_dictionaries({
    "key_id": st.sampled_from([key_id_of(public_key_b64(ALICE)), "k_0000000000000000"]) | st.text(max_size=70),
    "timestamp": st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    "nonce": st.text(max_size=70), "signature": st.text(max_size=210)}))


@settings(max_examples=300, deadline=None)
@given(envelope=_envelopes, args=st.lists(_junk, max_size=3))
def test_any_envelope_that_was_not_signed_is_refused_never_raises(envelope, args):
    answer = verifier(Clock()).verify("submit", args, {}, envelope)
    assert not isinstance(answer, Principal)
    assert answer.code in (RefusalCode.UNSIGNED, RefusalCode.UNKNOWN_KEY, RefusalCode.FORGED)


# --- holes a security review found, each closed

def test_a_forgotten_nonce_is_not_accepted_again_after_the_clock_steps_back():
    key = generate_key()
    who = Principal(public_key=public_key_b64(key), role="member", coop_id="c", subject="m")
    now = [1000.0]
    v = RequestVerifier({who.key_id: who}, clock=lambda: now[0], window_s=60)
    captured = sign_request(key, "usage", ("c", "m"), {}, now=1000.0)
    assert isinstance(v.verify("usage", ("c", "m"), {}, captured), Principal)
    now[0] = 1061.0  # any later request: the first nonce leaves the cache
    assert isinstance(v.verify("ping", (), {}, sign_request(key, "ping", (), {}, now=1061.0)), Principal)
    now[0] = 1030.0  # the clock steps back 31 s (NTP, a resumed VM): the captured request is in the window again
    answer = v.verify("usage", ("c", "m"), {}, captured)
    assert not isinstance(answer, Principal) and answer.code is RefusalCode.EXPIRED


@pytest.mark.parametrize("signed, altered", [
    (("t", b"\x80\x05pickled", None), ("t", {"sha256": hashlib.sha256(b"\x80\x05pickled").hexdigest()}, None)),
    (("c", {"1": "a"}), ("c", {1: "a"})),
    (("c", [1, 2]), ("c", {"l": [1, 2]})),
    (("c", {3, 1}), ("c", [1, 3])),
], ids=["bytes vs their digest dict", "int vs str key", "list vs a tagged-looking dict", "set vs sorted list"])
def test_two_different_calls_never_sign_alike(signed, altered):
    key = generate_key()
    who = Principal(public_key=public_key_b64(key), role="member", coop_id="c", subject="m")
    v = RequestVerifier({who.key_id: who}, clock=time.time, window_s=60)
    envelope = sign_request(key, "submit", signed, {}, now=time.time())
    assert not isinstance(v.verify("submit", altered, {}, envelope), Principal)
    assert isinstance(v.verify("submit", signed, {}, envelope), Principal)


@pytest.mark.parametrize("mangle", [lambda pem: f'"{pem}"', lambda pem: pem.split("\n", 1)[1]],
                         ids=["quoted", "header lost"])
def test_a_mangled_private_key_is_never_printed_in_the_error(mangle):
    key = generate_key()
    secret = private_key_pem(key).decode().splitlines()[1]  # the base64 line: the key itself
    text = mangle(private_key_pem(key).decode())
    with pytest.raises(ValueError) as err:
        load_private_key(text)
    assert secret not in str(err.value)
    from scheduler.client import Client
    with pytest.raises(InvalidRequest) as err:
        Client(key=text, _connect=False)
    assert secret not in str(err.value) and "key" in str(err.value)


def test_a_public_key_with_surrounding_whitespace_has_the_same_id():
    text = public_key_b64(generate_key())
    assert key_id_of(text + "\n") == key_id_of(" " + text) == key_id_of(text)


def test_a_restart_and_a_full_replay_cache_are_told_apart():
    key = generate_key()
    who = Principal(public_key=public_key_b64(key), role="member", coop_id="c", subject="m")
    now = [1000.0]
    v = RequestVerifier({who.key_id: who}, clock=lambda: now[0], window_s=60, max_nonces=2, not_before=999.0)
    before_start = v.verify("ping", (), {}, sign_request(key, "ping", (), {}, now=998.0))
    assert before_start.code is RefusalCode.EXPIRED and "(re)started" in before_start.message
    for t in (1000.1, 1000.2, 1000.3):  # the cache holds 2: the first is forgotten
        assert isinstance(v.verify("ping", (), {}, sign_request(key, "ping", (), {}, now=t)), Principal)
    forgotten = v.verify("ping", (), {}, sign_request(key, "ping", (), {}, now=1000.05))
    assert forgotten.code is RefusalCode.EXPIRED and "(re)started" not in forgotten.message
    assert "oldest request" in forgotten.message
