"""The head's request gate: every call is verified (signed mode) or labelled (development mode).

``@guarded`` wraps each public method of the head actor. A call carries its envelope in
the keyword argument ``_request={"signed": <scheduler.identity.sign_request(...)>}``; the
gate then

1. verifies the signature, the time window and the nonce (``scheduler.identity``),
2. binds the arguments to the method's signature and asks ``scheduler.authorization``
   whether this principal may make this call, closing open listing scopes to it,
3. enters the principal (``role:subject``) as the author of what it changes,

and answers ``{"ok": value, "dev_mode": bool}`` or ``{"refused": {"code", "message"},
"dev_mode": bool}``. A refusal changes nothing and is counted
(``coopsched_requests_refused_total{reason}``). A call without ``_request`` (a Ray
handle used directly) gets the bare value in development mode and ``AccessRefused``
(``unsigned``) in signed mode. Inside the head, a guarded method never calls another
guarded one (a rollback sets its policy through ``_set_policy``), so each request is
checked exactly once.

In development mode (``auth="dev"``) nothing is verified and every answer carries
``dev_mode: true``; the client and the CLI print ``DEV_MODE_LABEL`` on every output.

Usage reports are the one exception to the envelope: the worker signs each report
itself and the tracker keeps the signature beside it (``report["signed"]``) while the
report waits in its inbox; ``RequestGate.check_report`` verifies it without the time
window and nonce, because a report may wait for a restarting head longer than the window
and a resent report is harmless (settlement is idempotent by task id and attempt, and the
core refuses a report for any attempt but the one running on that executor).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.validation import NOT_BOOL, FieldError, InvalidRequest, parse
from scheduler.authorization import authorize, narrow, visible
from scheduler.damaged_records import is_damaged
from scheduler.identity import (DEFAULT_WINDOW_S, Principal, Refusal, RefusalCode, RequestVerifier, Role,
                                public_key_from_b64)

log = logging.getLogger("coopsched.auth")

KEY_RELOAD_INTERVAL_S = 1.0
KEY_REFRESH_S = 5.0
"""On a shared store, how old the key registry may get: a key removed through one head replica
is refused by the others within this."""
RELOAD_TRIES = 5  # reads of the key registry a reload makes while it keeps changing under it
DEV_MODE_LABEL = ("DEVELOPMENT MODE: requests are not signed; anyone who can reach this cluster can act as "
                  "any member")

_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("coopsched_caller", default=None)


def current_caller() -> Principal | None:
    """Who signed the call being served (None in development mode, or outside a guarded call)."""
    return _CALLER.get()


class AccessRefused(PermissionError):
    """The head refused the request before doing anything: ``code`` (a ``RefusalCode`` value) and how to fix it."""

    def __init__(self, code: str, message: str):
        self.code = code
        self.message = message
        super().__init__(f"refused ({code}): {message}")

    def __reduce__(self):  # survive pickling across Ray boundaries
        return (AccessRefused, (self.code, self.message))


class AuthSettings(BaseModel):
    """How the head decides who is asking."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"mode": "signed", "operator_key": "x5mT3m0K6lZk0l8nY2b1cN3v9a3s1Q0l2m4n6p8r0t4=", "window_s": 60}]})

    mode: Literal["dev", "signed"] = Field(default="dev", examples=["signed"])
    operator_key: str | None = Field(default=None, description="the operator's base64 public key (signed mode)",
                                     examples=["x5mT3m0K6lZk0l8nY2b1cN3v9a3s1Q0l2m4n6p8r0t4="])
    window_s: Annotated[float, NOT_BOOL] = Field(default=DEFAULT_WINDOW_S, gt=0, le=3600, allow_inf_nan=False, examples=[60])

    @field_validator("operator_key")
    @classmethod
    def _valid_key(cls, value: str | None) -> str | None:
        if value is not None:
            public_key_from_b64(value)
            return value.strip()
        return value

    @model_validator(mode="after")
    def _signed_needs_operator(self) -> AuthSettings:
        if self.mode == "signed" and self.operator_key is None:
            raise ValueError("signed mode needs the operator's public key (operator_key, or "
                             "`coopsched start --operator-key FILE_OR_PUBKEY`); or choose mode 'dev'")
        return self


class RequestGate:
    """The verifier (operator key + the store's key registry), the refusal counter and the answer format."""

    def __init__(self, settings: AuthSettings, store: Any, on_refused: Callable[[str], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.dev_mode = settings.mode == "dev"
        self.store = store
        self.on_refused = on_refused
        self._lock = threading.Lock()  # the reads concurrency group verifies on other threads
        self.verifier = RequestVerifier(clock=clock, window_s=settings.window_s, not_before=clock())
        if settings.operator_key:
            self.operator = Principal(public_key=settings.operator_key, role=Role.OPERATOR, subject="operator")
            self.verifier.add(self.operator)
        self._clock = clock
        self._loaded_at = float("-inf")
        self._refused_keys: set[str] = set()  # stored keys not loaded, by key id (or public key): logged once
        self.damaged_keys: list[str] = []  # of those, as the last reload found them (``ping`` names them)
        self._load_keys()

    def _load_keys(self) -> None:
        """Make the registry the store's (another head replica on the same store may have added or
        removed keys); the operator's key is this head's own and stays. The store is read without the
        gate's lock (the main loop may hold the store's lock across a call's writes and then verify a
        report: holding both in the other order would freeze the head); the registry changes under it."""
        self._loaded_at = self._clock()
        for _ in range(RELOAD_TRIES):
            before = self.verifier.changes
            records = self.store.keys()
            with self._lock:
                if self.verifier.changes == before:  # else a key was added or removed since the read (a
                    # revoked key would come back from the stale list): read again
                    self._apply_keys(records)
                    return
        log.warning("the key registry kept changing during %d reloads; keeping the keys in memory", RELOAD_TRIES)

    def add_principal(self, principal: Principal) -> None:
        """Register a key in memory (its store write is the caller's), under the lock a reload applies its
        read under: a reload never undoes a change made while it ran (see ``_load_keys``)."""
        with self._lock:
            self.verifier.add(principal)

    def remove_principal(self, key_id: str) -> None:
        with self._lock:
            self.verifier.remove(key_id)

    def _apply_keys(self, records: list[dict]) -> None:
        """Make the verifier's keys ``records``'. One that cannot be read (``damaged_key``) or validated is not
        accepted (fail closed: a copy held from before is dropped too), and the others are; each is logged
        once (the store logs a damaged one), not at every reload."""
        registered: set[str] = set()
        damaged: list[str] = []
        for record in records:
            if is_damaged(record):
                damaged.append(record["key_id"])
                continue
            try:
                principal = Principal.model_validate(record)
            except ValueError as exc:
                name = str(record.get("public_key", "?"))[:12]
                damaged.append(name)
                if name not in self._refused_keys:
                    log.error("registered key %s not loaded (requests signed with it are refused): %s", name,
                              " ".join(str(exc).split())[:300])
                continue
            registered.add(principal.key_id)
            held = self.verifier.get(principal.key_id)
            if held is not None and held.role is Role.OPERATOR:
                continue  # the operator's key is this head's own: a stored record never replaces it
            if held != principal:
                self.verifier.add(principal)
        for principal in self.verifier.principals():
            if principal.key_id not in registered and principal.role is not Role.OPERATOR:
                self.verifier.remove(principal.key_id)
        self._refused_keys = set(damaged)
        self.damaged_keys = damaged  # (replaced whole: ``ping`` reads it from another thread)

    def _verify(self, method: str, args: tuple, kwargs: dict, envelope: Any, **options: Any) -> Principal | Refusal:
        if self.store.shared and self._clock() - self._loaded_at > KEY_REFRESH_S:
            self._load_keys()
        with self._lock:
            answer = self.verifier.verify(method, args, kwargs, envelope, **options)
        if isinstance(answer, Refusal) and answer.code is RefusalCode.UNKNOWN_KEY \
                and self._clock() - self._loaded_at > KEY_RELOAD_INTERVAL_S:
            self._load_keys()  # at most once a second: an unknown key is cheap to refuse
            with self._lock:
                answer = self.verifier.verify(method, args, kwargs, envelope, **options)
        if isinstance(answer, Principal) and options.get("check_freshness", True) and self.store.shared:
            return self._claim_across_replicas(method, envelope, answer)
        return answer

    def _claim_across_replicas(self, method: str, envelope: Any, principal: Principal) -> Principal | Refusal:
        """On a shared store the nonce is claimed there too, so a request accepted by one head replica
        is refused as a replay by the others. If the store cannot be reached, this head's own cache
        (already checked) is the guard: refusing every request while Redis is down would stop reads
        that need no store."""
        key_id, nonce = _field(envelope, "key_id"), _field(envelope, "nonce")
        try:
            claimed = self.store.claim_nonce(key_id, nonce, 2 * self.settings.window_s)
        except Exception as exc:  # noqa: BLE001  # infrastructure: fall back to the local cache
            log.warning("nonce not claimed on the shared store (%s: %s); this head's cache guards alone",
                        type(exc).__name__, exc)
            return principal
        if claimed:
            return principal
        return Refusal(code=RefusalCode.REPLAYED, message=(
            f"request {method!r} with nonce {nonce[:16]} was already received by another head replica; every "
            "request needs a fresh nonce (the client makes one per call; do not resend a signed request)"))

    def refuse(self, refusal: Refusal) -> Refusal:
        self.on_refused(refusal.code.value)
        log.warning("refused request: %s", refusal)
        return refusal

    def admit(self, method: str, signature: inspect.Signature, head: Any, facts: Any, args: tuple, kwargs: dict,
              request: dict | None) -> tuple[inspect.BoundArguments | None, Principal | None] | Refusal:
        if self.dev_mode:
            return None, None
        envelope = request.get("signed") if isinstance(request, dict) else None
        principal = self._verify(method, args, kwargs, envelope)
        if isinstance(principal, Refusal):
            return self.refuse(principal)
        try:
            bound = signature.bind(head, *args, **kwargs)
        except TypeError as exc:  # too few or too many arguments: as clear as any other bad input
            raise InvalidRequest(method, [FieldError("arguments", f"{len(args)} positional, {sorted(kwargs)}",
                                                     f"the arguments of {method}: {exc}",
                                                     f"{method}{_public_signature(signature)}")]) from None
        bound.apply_defaults()
        named = {k: v for k, v in list(bound.arguments.items())[1:]}
        refusal = authorize(principal, method, named, facts)
        if refusal is not None:
            return self.refuse(refusal)
        for name, value in narrow(principal, method, named).items():
            bound.arguments[name] = value
        for name in ("author", "actor"):  # what it changes is entered under its own name
            if name in bound.arguments:
                bound.arguments[name] = f"{principal.role.value}:{principal.subject}"
        return bound, principal

    def check_report(self, report: dict, signed: dict | None, facts: Any) -> Refusal | None:
        """None if ``report`` was signed by the executor it names (or the operator)."""
        if self.dev_mode:
            return None
        principal = self._verify("report", (report,), {}, signed, check_freshness=False)
        if isinstance(principal, Refusal):
            return self.refuse(principal)
        refusal = authorize(principal, "report", {"report": report}, facts)
        return self.refuse(refusal) if refusal is not None else None

    def answer(self, value: Any) -> dict:
        return {"ok": value, "dev_mode": self.dev_mode}

    def answer_refused(self, refusal: Refusal) -> dict:
        return {"refused": {"code": refusal.code.value, "message": refusal.message}, "dev_mode": self.dev_mode}


def _field(envelope: Any, name: str) -> str:
    """A field of a verified envelope (a dict, or a ``SignedRequest``)."""
    return str(envelope[name] if isinstance(envelope, dict) else getattr(envelope, name))


def _public_signature(signature: inspect.Signature) -> str:
    params = [p for name, p in signature.parameters.items() if name not in ("self", "_request", "author", "actor")]
    return str(signature.replace(parameters=params))


def _plain(value: Any, depth: int = 0) -> Any:
    """The call's arguments with every pydantic model replaced by its fields, at any depth: a model can
    be made without validation (``model_construct``) and arrive pickled through Ray, and pydantic accepts
    an instance of a field's type as it is, so only plain data reaches the head's validation."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python", round_trip=True)
    if depth > 64:
        return value  # (deeper: validation refuses it as nested too deep)
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(v, depth + 1) for v in value)
    return value


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap one async method of the head: verify, authorize, narrow, call, filter, answer (see the module notes)."""
    name = fn.__name__
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    extra = inspect.Parameter("_request", inspect.Parameter.KEYWORD_ONLY, default=None)
    at = len(params) - 1 if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD else len(params)
    params.insert(at, extra)

    @functools.wraps(fn)
    async def wrapper(self, *args: Any, _request: dict | None = None, **kwargs: Any) -> Any:
        gate: RequestGate = self.gate
        outcome = gate.admit(name, signature, self, self.facts, args, kwargs, _request)
        if isinstance(outcome, Refusal):
            if _request is None:
                raise AccessRefused(outcome.code.value, outcome.message)
            return gate.answer_refused(outcome)
        bound, principal = outcome
        caller = _CALLER.set(principal)  # for whoami; set and reset around this call only
        try:
            if bound is not None:
                value = await fn(*_plain(bound.args), **_plain(bound.kwargs))
            else:
                value = await fn(self, *_plain(args), **_plain(kwargs))
        finally:
            _CALLER.reset(caller)
        if principal is not None:
            value = visible(principal, name, value)
        return value if _request is None else gate.answer(value)

    # Ray reads the signature to pass keyword arguments: it must show ``_request``. Ray follows
    # ``__wrapped__`` to the innermost function for it (ray.util.tracing), so the wrapper keeps the
    # name and docstring but not ``__wrapped__``.
    del wrapper.__wrapped__
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return wrapper


class HeadFacts:
    """What authorization asks about the head's state (kept off the actor, so Ray does not expose it)."""

    def __init__(self, head: Any) -> None:
        self.head = head

    def job_owner(self, task_id: str) -> tuple[str, str] | None:
        task = self.head.core.task(task_id)
        if task is not None:
            return task.coop_id, task.member
        record = self.head.store.get_job(task_id)
        return (record["coop_id"], record["member"]) if record else None

    def executor_coop(self, executor_id: str) -> str | None:
        table = self.head.core.table
        return table.spec(executor_id).coop_id if executor_id in table else None

    def key_owner(self, key_id: str) -> Principal | None:
        return self.head.gate.verifier.get(key_id)


class KeyAdministration:
    """The key registry through the head (a mixin of ``scheduler.head.Head``); every change is logged."""

    @guarded
    async def add_key(self, principal: dict, actor: str = "admin") -> dict:
        """Register a public key as a member, admin or executor of a coop (replaces that key's entry)."""
        parsed = parse(Principal, principal, what="key")
        if parsed.role is Role.OPERATOR:
            raise InvalidRequest("key", [FieldError("role", "'operator'", "member, admin or executor (the operator "
                                                    "key is given when the head starts)", "member")])
        self._add_key(parsed, actor)
        return {**parsed.model_dump(mode="json"), "key_id": parsed.key_id}

    def _check_not_operator_key(self, principal: Principal) -> None:
        held = self.gate.verifier.get(principal.key_id)
        if held is not None and held.role is Role.OPERATOR:  # not even by the operator: it is this head's own
            raise InvalidRequest("key", [FieldError("public_key", "the operator's key", "a key not yet in use",
                                                    "a new key pair: coopsched keys new")])

    def _add_key(self, principal: Principal, actor: str) -> None:
        self._check_not_operator_key(principal)
        self.store.put_key(principal.key_id, principal.model_dump(mode="json"))
        self.gate.add_principal(principal)
        self._log(principal.coop_id or "*", "key.add", actor, {"key_id": principal.key_id,
                                                               "role": principal.role.value,
                                                               "subject": principal.subject})

    @guarded
    async def remove_key(self, key_id: str, actor: str = "admin") -> bool:
        principal = self.gate.verifier.get(key_id) if isinstance(key_id, str) else None
        if principal is None or principal.role is Role.OPERATOR:
            return False
        self.store.remove_key(key_id)
        self.gate.remove_principal(key_id)
        self._log(principal.coop_id or "*", "key.remove", actor, {"key_id": key_id, "role": principal.role.value,
                                                                  "subject": principal.subject})
        return True

    @guarded
    async def list_keys(self, coop_id: str | None = None) -> list[dict]:
        return [{**p.model_dump(mode="json"), "key_id": p.key_id} for p in self.gate.verifier.principals()
                if p.role is not Role.OPERATOR and (coop_id is None or p.coop_id == coop_id)]

    @guarded
    async def whoami(self) -> dict:
        """Who the head takes the caller for (None in development mode) and the head's mode."""
        caller = _CALLER.get()
        return {"dev_mode": self.gate.dev_mode,
                "principal": {**caller.model_dump(mode="json"), "key_id": caller.key_id} if caller else None}

    def _remove_executor_keys(self, executor_id: str, coop_id: str, actor: str, keep: str | None = None) -> None:
        """The executor keys of this executor of this coop (another coop's key for the same id stays), but
        ``keep`` (a key id): registering an executor with a new key revokes its old ones (a rotation)."""
        for p in self.gate.verifier.principals():
            if p.role is Role.EXECUTOR and p.subject == executor_id and p.coop_id == coop_id and p.key_id != keep:
                self.store.remove_key(p.key_id)
                self.gate.remove_principal(p.key_id)
                self._log(p.coop_id or "*", "key.remove", actor, {"key_id": p.key_id, "role": "executor",
                                                                  "subject": executor_id})
