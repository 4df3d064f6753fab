"""Rule plug-ins: rule type ``plugin``, resolved by URI, run with a time budget.

A policy names a plug-in by ``uri``::

    {"type": "plugin", "name": "quota", "uri": "quota-checker:2.0",
     "parameters": {"default_limit": 100}, "timeout_ms": 50}

**Resolution** (``policies.plugin_resolution``). ``uri`` is looked up first in the entry-point group ``coopsched.rules``.
An entry point named ``NAME:VERSION`` declares its version and matches only that URI; one
named ``NAME`` declares none and matches ``NAME`` and ``NAME:<any version>`` (so a policy
naming ``NAME`` never binds to whichever single version happens to be installed). A package
declares its plug-ins in its ``pyproject.toml``::

    [project.entry-points."coopsched.rules"]
    "quota-checker:2.0" = "mypackage.quota:QuotaChecker"

Failing an entry point, ``uri`` is a dotted path, ``package.module:attr`` or
``package.module.attr``, inside a package the head's operator allows: the environment
variable ``COOPSCHED_PLUGIN_MODULES`` lists them (comma-separated, e.g. ``coop_rules,lab.quota``;
none by default). A coop admin writes policies, and a dotted path anywhere would let one call
any importable function with the rule's parameters (``os:system``) as the head: only code the
operator installed (an entry point) or listed can be named. Python's standard library, built-in
functions and coopsched's own packages are never plug-ins.

**Where.** Reading a policy (``CoopPolicy`` validation: a client, ``coopsched policy
validate``) checks only the form of ``uri``, so a machine without the head's plug-ins
can read and write policies, and never runs plug-in code. Installing a policy
(``CompiledPolicy.of``, i.e. ``SchedulerCore.set_policy`` in the head) resolves and makes
its plug-ins, and fails with ``InvalidRequest`` at ``rules[i].plugin.uri`` (a URI that
names no installed plug-in, with the installed ones listed) or ``rules[i].plugin.parameters``
(a plug-in that refuses them): the policy is not installed. :func:`resolve_all` does the
URI check alone, for a tool run beside the head's plug-ins (``coopsched policy validate``
checks the form only).

**What a plug-in is.** The resolved object is a class or a factory (called to make the
plug-in) or a ready object. A callable is called with the rule's ``parameters``: with
``(rule_id, settings, parameters)`` when those are its parameter names (the vDAG
constructor), with ``parameters=`` when it takes a parameter of that name, else with
the parameters as keyword arguments. It is made on the plug-in's own thread, within
``SETUP_BUDGET_S``.

The plug-in then implements the built-in rules' protocol (``policies.rules``): only the
phases it takes part in, ``check``, ``constrain``, ``adjust``, ``hold_until``,
``closed_until``, ``reserve``, and optionally ``management(action, data) -> dict``.

**vDAG plug-ins** (seed 000) have ``eval(parameters, input_data, context) -> dict`` and
``management(action, data) -> dict`` instead; they are adapted as they are, as an
admission ``check``. ``input_data`` is the task as JSON plus ``coop_id``, ``member``,
``session_id`` (the member: vDAG quotas were per session) and ``task_id``; ``context`` is
``{"now": epoch s, "runtime_s": the task's runtime limit, "rule": the rule's name,
"coop_id": ...}``. The answer means:

- ``{"allowed": true}``, ``{}`` or ``None``: no objection (``{}`` is what passive vDAG
  policies, such as the quality checker, return);
- ``{"allowed": false, "reason": "...", "code": "unavailable"}``: a refusal. ``code`` is
  ``rejected`` (the default: the task will not fit as submitted) or ``unavailable``
  (it may fit later, e.g. a quota that resets); ``reason`` (or ``message``) is shown to
  the member, with the rule's name as the source;
- anything else is an ``error`` reason (the plug-in broke its contract).

**Time budget.** Every call into a plug-in runs on that plug-in's own daemon thread and
the caller waits at most ``timeout_ms``. Python cannot stop a thread, so a call that
overruns goes on running; its caller gets an ``error`` reason at once ("plug-in quota
exceeded its 50 ms budget") and, while that call is still running, later calls are not
queued behind it but answered with an ``error`` reason straight away: a stuck plug-in
costs each submission nothing, not a budget. ``error`` reasons are violations like any
other: a strict policy rejects the task, a permissive one admits it with a warning.
Calls into one plug-in are serialized (its thread runs one at a time, management
actions included), so a plug-in needs no locking of its own. The price is the thread
hand-off: ~20-120 us per call (p50, swinging with the machine's load; p99 up to ~400 us)
on the 2-core development machine, against ~1 us for the same check as a Python rule
(``benchmarks/expression_cost.py``).
What a plug-in cannot be stopped from doing: ``os._exit``, or holding the GIL in a C
extension; only plug-ins installed on the head can be named, so this is a matter of
trusting what one installs.

**Plug-in state.** One plug-in object serves one rule of one coop's policy. A new
policy version that keeps the rule as it was (same name, uri, parameters, timeout_ms)
keeps the same object, so state changed by management actions survives edits to the
rest of the policy; a changed rule gets a new object (and so does a rule whose plug-in
is stuck in an overrun call). Nothing of a plug-in's state is persisted by the
scheduler: a restarted head makes the plug-ins anew from the policy. Plug-ins that must
keep state across restarts keep it themselves (the vDAG quota checker kept it in Redis).
A dry run (shadow evaluation) should install :func:`detached` copies, whose plug-ins are
their own, or a replay would count in the live plug-ins.

**Management.** :func:`manage` runs a plug-in's ``management(action, data)`` for the
head, the client and ``coopsched policy mgmt``.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator
from pydantic_core import PydanticCustomError

from policies.plugin_resolution import (ENTRY_POINT_GROUP, PLUGIN_MODULES_ENV, PluginNotFound,  # noqa: F401
                                        allowed_plugin_modules, resolve)  # (re-exported: the plug-in API)
from policies.plugin_runner import BudgetRunner, PluginError, PluginTimeout, check_answer
from policies.reasons import Reason, ReasonCode, error
from policies.rules import _Rule
from policies.validation import NOT_BOOL, FieldError, InvalidRequest

if TYPE_CHECKING:
    from policies.model import CoopPolicy
    from policies.rules import RuleContext
    from scheduler.tasks import TaskSpec

PHASES = ("check", "constrain", "adjust", "hold_until", "closed_until", "reserve")
SETUP_BUDGET_S = 5.0
"""How long a plug-in's constructor may take when its policy is installed."""
MANAGEMENT_BUDGET_S = 10.0
"""How long one management action may take."""

MAX_PARAMETER_CHARS = 65_536
"""The most a plug-in rule's ``parameters`` may take as JSON."""
MAX_PARAMETER_DEPTH = 32
"""How deep a plug-in rule's ``parameters`` may nest."""

_URI_FORM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(:[A-Za-z0-9_][A-Za-z0-9_.+\-]*)?$")
_VDAG_CONSTRUCTOR = ("rule_id", "settings", "parameters")
# ----------------------------------------------------------------------------- the rule
class PluginRule(_Rule):
    """A rule implemented by a plug-in: installed code named by ``uri`` (see `policies.plugins`).

    ``uri`` is an entry point of the group `coopsched.rules` (`NAME:VERSION`, or `NAME`)
    or a dotted path `package.module:attr` inside a package the head's operator lists in
    `COOPSCHED_PLUGIN_MODULES` (none by default). The plug-in implements the rule protocol's
    phases it needs, or is a vDAG policy rule (`eval(parameters, input_data, context)`
    returning `{"allowed": bool}`, `management(action, data)`). Each call gets
    ``timeout_ms``; a plug-in that raises or overruns gives an `error` reason (strict:
    rejected; permissive: admitted with a warning). The head resolves and makes the
    plug-in when it installs the policy, and refuses the policy if it cannot. Unlike other
    rules its ``name`` is required: management actions (`coopsched policy mgmt`) find the
    plug-in by it.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "plugin", "name": "quota", "uri": "quota-checker:2.0",
         "parameters": {"default_limit": 100, "whitelist": ["did:icn:ops"]}, "timeout_ms": 50}]})

    type: Literal["plugin"] = "plugin"
    name: str = Field(min_length=1, max_length=200, examples=["quota"],
                      description="the rule's name: the source of its reasons, and how management actions find it")
    uri: str = Field(min_length=1, max_length=500, examples=["quota-checker:2.0"], description=(
        "an entry point of group `coopsched.rules` (`NAME:VERSION` or `NAME`), or `package.module:attr` in a "
        "package the operator allows (`COOPSCHED_PLUGIN_MODULES`)"))
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"default_limit": 100}],
                                       description="given to the plug-in's constructor (and to a vDAG `eval`)")
    timeout_ms: Annotated[float, NOT_BOOL] = Field(default=50.0, gt=0, le=10_000, allow_inf_nan=False, examples=[50],
                              description="time budget of each call; an overrun is an `error` reason")

    _coop_id: str | None = PrivateAttr(default=None)
    _runtime: PluginRuntime | None = PrivateAttr(default=None)

    @field_validator("uri")
    @classmethod
    def _uri_form(cls, v: str) -> str:
        if not _URI_FORM.match(v):
            raise PydanticCustomError("plugin_uri", "{detail}", {"detail": (
                "an entry point of group 'coopsched.rules' as NAME:VERSION or NAME, or a dotted path "
                "'package.module:attr'")})
        return v

    @field_validator("parameters")
    @classmethod
    def _json(cls, v: dict[str, Any]) -> dict[str, Any]:
        # Kept as the JSON it is stored as (tuples become lists, number keys strings), so a policy
        # reads back from the store equal to what was installed. sort_keys: key() sorts them (mixed
        # key types fail there otherwise); the depth and size bounds keep the policy storable
        # (pydantic will not serialize deeper nesting) and small.
        try:
            if _depth(v) > MAX_PARAMETER_DEPTH:
                raise ValueError(f"nested more than {MAX_PARAMETER_DEPTH} levels deep")
            size = len(json.dumps(v, allow_nan=False, sort_keys=True))
            if size <= MAX_PARAMETER_CHARS:
                v = json.loads(json.dumps(v))
        except (TypeError, ValueError, RecursionError) as exc:
            raise PydanticCustomError("plugin_parameters", "a JSON object ({detail})",
                                      {"detail": str(exc)[:200]}) from None
        if size > MAX_PARAMETER_CHARS:
            raise PydanticCustomError("plugin_parameters", "a JSON object of at most {limit} characters as JSON "
                                      "(got {size}); keep large data where the plug-in can read it",
                                      {"limit": MAX_PARAMETER_CHARS, "size": size})
        return v

    # the live plug-in is not part of the rule's value: equality, hashing and pickling ignore it
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(self.key())

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["__pydantic_private__"] = {"_coop_id": self._coop_id, "_runtime": None}
        return state

    def key(self) -> tuple:
        """What identifies this rule's plug-in object within a coop (see "Plug-in state")."""
        return (self.name, self.uri, json.dumps(self.parameters, sort_keys=True), self.timeout_ms)

    def attach(self, coop_id: str | None) -> PluginRuntime:
        """Make (or reuse) this rule's plug-in for ``coop_id``. Raises ``PluginError``."""
        if self._runtime is not None and self._coop_id == coop_id and not self._runtime.stuck:
            return self._runtime
        runtime = _RUNTIMES.get((coop_id, *self.key()))
        if runtime is None or runtime.stuck:
            runtime = PluginRuntime.start(self.name, self.uri, self.parameters, self.timeout_ms / 1000.0)
            _RUNTIMES[(coop_id, *self.key())] = runtime
        self._coop_id, self._runtime = coop_id, runtime
        return runtime

    def detached(self, coop_id: str | None) -> PluginRule:
        """A copy of this rule with a plug-in object of its own (made anew from the parameters)."""
        twin = self.model_copy()
        twin._coop_id = coop_id
        twin._runtime = PluginRuntime.start(self.name, self.uri, self.parameters, self.timeout_ms / 1000.0,
                                            own=True)
        return twin

    @property
    def runtime(self) -> PluginRuntime:
        return self._runtime if self._runtime is not None else self.attach(self._coop_id)

    def bound(self) -> BoundPlugin:
        """The object admission calls: it has exactly the phases the plug-in implements."""
        return self.runtime.bound


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (without recursion: any depth is measured)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, (list, tuple)):
            deepest = max(deepest, depth)
            if depth <= MAX_PARAMETER_DEPTH:
                stack.extend((x, depth + 1) for x in item)
    return deepest


_RUNTIMES: weakref.WeakValueDictionary[tuple, PluginRuntime] = weakref.WeakValueDictionary()


def attach_all(policy: CoopPolicy, extra_rules: tuple = ()) -> None:
    """Resolve and make the plug-ins of ``policy``'s plug-in rules (and of ``extra_rules``).

    ``CompiledPolicy.of`` calls this, so it happens where the policy is installed (the
    head, a core), never where a policy is only read (a client, ``policy validate``).
    Raises ``InvalidRequest`` naming ``rules[i].plugin.uri`` for a URI that names no
    installed plug-in and ``rules[i].plugin.parameters`` for a plug-in that refuses them.
    """
    _each_plugin(tuple(policy.rules) + tuple(extra_rules), lambda rule: rule.attach(policy.coop_id))


def resolve_all(policy: CoopPolicy) -> None:
    """Check that every plug-in URI of ``policy`` names an installed plug-in, making none of them.

    For a check on a machine that has the head's plug-ins installed (``coopsched policy validate``
    checks only the form of each URI, so it runs anywhere).
    Raises ``InvalidRequest`` naming ``rules[i].plugin.uri``.
    """
    _each_plugin(policy.rules, lambda rule: resolve(rule.uri))


def detached(policy: CoopPolicy) -> CoopPolicy:
    """``policy`` with plug-in objects of its own, made anew and shared with no live policy.

    For dry runs (shadow evaluation, benchmarks): a replay through the live policy object
    calls the live plug-ins, and a stateful one (a quota counter) would count the replay.
    Raises ``InvalidRequest`` as :func:`attach_all` does.
    """
    if not any(isinstance(r, PluginRule) for r in policy.rules):
        return policy
    rules = list(policy.rules)

    def detach(rule: PluginRule) -> None:
        rules[rules.index(rule)] = rule.detached(policy.coop_id)

    _each_plugin(policy.rules, detach)
    return policy.model_copy(update={"rules": tuple(rules)})


def _each_plugin(rules: tuple, action: Callable[[PluginRule], Any]) -> None:
    errors = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, PluginRule):
            continue
        try:
            action(rule)
        except PluginNotFound as exc:
            errors.append(FieldError(f"rules[{i}].plugin.uri", json.dumps(rule.uri), str(exc), '"quota-checker:2.0"'))
        except PluginError as exc:
            errors.append(FieldError(f"rules[{i}].plugin.parameters", _short_json(rule.parameters), str(exc),
                                     '{"default_limit": 100}'))
    if errors:
        raise InvalidRequest("policy", errors)


def instantiate(target: Any, name: str, parameters: dict[str, Any], timeout_s: float, own: bool = False) -> Any:
    """Make the plug-in object from what its URI resolved to (see the module docstring); ``own``: a
    ready object is copied, so a dry run's calls do not reach the live one."""
    if not (inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target)
            or inspect.isbuiltin(target)):
        if not _phases_of(target) and not _is_vdag(target):
            raise PluginError(f"{target!r} is neither a class, a factory nor an object with any of "
                              f"{', '.join(PHASES)} or eval")
        if own:
            try:
                return copy.deepcopy(target)
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"the ready object {target!r} cannot be copied for a dry run "
                                  f"({type(exc).__name__}); name a class or a factory instead") from None
        return target
    if inspect.isbuiltin(target):
        raise PluginError(f"{target!r} is a built-in function, not a plug-in class or factory")
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    names = tuple(signature.parameters) if signature else ()
    if names[:3] == _VDAG_CONSTRUCTOR:
        obj = target(name, {"name": name, "timeout_ms": timeout_s * 1000.0}, dict(parameters))
    elif "parameters" in names:
        obj = target(parameters=dict(parameters))
    else:
        obj = target(**parameters)
    if not _phases_of(obj) and not _is_vdag(obj):
        raise PluginError(f"the object made by {target!r} has none of {', '.join(PHASES)} or eval")
    return obj


def _phases_of(obj: Any) -> tuple[str, ...]:
    return tuple(p for p in PHASES if callable(getattr(obj, p, None)))


def _is_vdag(obj: Any) -> bool:
    return callable(getattr(obj, "eval", None))


# ----------------------------------------------------------------------------- the live plug-in
class PluginRuntime:
    """A plug-in object with its thread and budget, and the phases admission calls."""

    def __init__(self, label: str, uri: str, parameters: dict[str, Any], budget_s: float, runner: BudgetRunner,
                 instance: Any) -> None:
        self.label, self.uri, self.parameters, self.budget_s = label, uri, parameters, budget_s
        self.runner, self.instance = runner, instance
        self.vdag = _is_vdag(instance) and not _phases_of(instance)
        self.bound = BoundPlugin(self)
        weakref.finalize(self, runner.stop)

    @classmethod
    def start(cls, label: str, uri: str, parameters: dict[str, Any], budget_s: float,
              own: bool = False) -> PluginRuntime:
        """Resolve ``uri`` and make the plug-in on its own thread. Raises ``PluginError``. ``own``: a
        plug-in object no one else holds, even when the URI names a ready object (a copy of it)."""
        target = resolve(uri)
        runner = BudgetRunner(label)
        try:
            instance = runner.call(instantiate, (target, label, parameters, budget_s, own), SETUP_BUDGET_S)
        except PluginTimeout:
            runner.stop()
            raise PluginError(f"parameters with which plug-in {label} ({uri}) starts within "
                              f"{SETUP_BUDGET_S:g} s; making it took longer") from None
        except Exception as exc:
            runner.stop()
            raise PluginError(f"parameters plug-in {label} ({uri}) accepts; making it failed with "
                              f"{type(exc).__name__}: {exc}") from None
        return cls(label, uri, parameters, budget_s, runner, instance)

    @property
    def stuck(self) -> bool:
        return self.runner.stuck

    @property
    def phases(self) -> tuple[str, ...]:
        return ("check",) if self.vdag else _phases_of(self.instance)

    def call(self, phase: str, *args: Any) -> Any:
        return self.runner.call(getattr(self.instance, phase), args, self.budget_s)

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        try:
            if self.vdag:
                return self._vdag_check(task, ctx)
            out = self.call("check", task, ctx)
        except PluginTimeout as exc:
            return error(self.label, str(exc))
        except Exception as exc:
            return error(self.label, f"plug-in {self.uri} failed in check: {type(exc).__name__}: {exc}")
        if out is None or isinstance(out, Reason):
            return out
        return error(self.label, f"plug-in {self.uri} returned {type(out).__name__} from check; "
                     "expected a Reason or None")

    def _vdag_check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        input_data = {**task.model_dump(mode="json"), "coop_id": task.coop_id, "member": task.member,
                      "session_id": task.member, "task_id": task.task_id}
        context = {"now": ctx.now, "runtime_s": ctx.runtime_s, "rule": self.label, "coop_id": task.coop_id}
        out = self.runner.call(self.instance.eval, (dict(self.parameters), input_data, context), self.budget_s)
        return vdag_reason(self.label, self.uri, out)

    def manage(self, action: str, data: dict[str, Any]) -> dict[str, Any]:
        method = getattr(self.instance, "management", None)
        if not callable(method):
            return {"status": "error", "message": f"plug-in {self.label} ({self.uri}) has no management actions"}
        try:
            out = self.runner.call(method, (action, data), max(MANAGEMENT_BUDGET_S, self.budget_s))
        except PluginTimeout:
            return {"status": "error", "message": f"plug-in {self.label} did not answer {action!r} within "
                                                  f"{MANAGEMENT_BUDGET_S:g} s"}
        except Exception as exc:
            return {"status": "error", "message": f"plug-in {self.label} failed in {action!r}: "
                                                  f"{type(exc).__name__}: {exc}"}
        return _jsonable(out if isinstance(out, dict) else {"status": "ok", "value": out})


def vdag_reason(source: str, uri: str, out: Any) -> Reason | None:
    """What a vDAG ``eval`` answer means (see the module docstring)."""
    if out is None or isinstance(out, dict) and "allowed" not in out:
        return None
    if isinstance(out, bool):
        out = {"allowed": out}
    if not isinstance(out, dict) or not isinstance(out.get("allowed"), bool):
        return error(source, f"plug-in {uri} answered {_short(out)}; expected {{\"allowed\": true|false}}")
    if out["allowed"]:
        return None
    code = out.get("code", ReasonCode.REJECTED.value)
    if code not in {c.value for c in ReasonCode}:
        return error(source, f"plug-in {uri} refused the task with unknown code {_short(code)} "
                     "(expected rejected or unavailable)")
    message = out.get("reason") or out.get("message") or f"refused by plug-in {uri}"
    return Reason(code=ReasonCode(code), source=source, message=str(message))


class BoundPlugin:
    """What admission sees of a plug-in: ``label`` and only the phases the plug-in implements.

    ``check`` answers an overrun or a failure with an ``error`` reason; the other phases
    raise (``PluginTimeout`` or the plug-in's exception) and admission makes the reason.
    """

    def __init__(self, runtime: PluginRuntime) -> None:
        self.label = runtime.label
        for phase in runtime.phases:
            if phase == "check":
                self.check = runtime.check
            else:
                setattr(self, phase, _phase_call(runtime, phase))

    def __repr__(self) -> str:
        return f"BoundPlugin({self.label!r}, phases={[p for p in PHASES if hasattr(self, p)]})"


def _phase_call(runtime: PluginRuntime, phase: str) -> Callable:
    def call(task: TaskSpec, ctx: RuleContext) -> Any:
        return check_answer(phase, runtime.call(phase, task, ctx))
    call.__name__ = phase
    return call


# ----------------------------------------------------------------------------- management
def manage(policy: CoopPolicy, rule_name: str, action: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run management ``action`` of the plug-in rule named ``rule_name`` in ``policy``.

    Returns the plug-in's answer, a JSON object (by convention ``{"status": "ok"|"error",
    ...}``); a plug-in that fails, overruns ``MANAGEMENT_BUDGET_S`` or has no management
    actions gives ``{"status": "error", "message": ...}``. A caller's mistake (no such
    rule, a rule that is not a plug-in, a bad action or data) raises ``InvalidRequest``.
    Actions act on the live plug-in object of ``policy`` (the one the head admits with).
    """
    what = "plug-in management request"
    plugins = [r for r in policy.rules if isinstance(r, PluginRule)]
    names = ", ".join(repr(r.name) for r in plugins) or "none (this policy has no plug-in rules)"
    rule = next((r for r in plugins if r.name == rule_name), None)
    if rule is None:
        others = [r for r in policy.rules if r.label == rule_name]
        accepted = f"the name of a plug-in rule of coop {policy.coop_id}: {names}" + (
            f" ({rule_name!r} is a {others[0].type} rule, which has no management actions)" if others else "")
        raise InvalidRequest(what, [FieldError("rule", _short(rule_name), accepted,
                                               plugins[0].name if plugins else "quota")])
    if not isinstance(action, str) or not action:
        raise InvalidRequest(what, [FieldError("action", _short(action), "an action name of the plug-in",
                                               "get_quota")])
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise InvalidRequest(what, [FieldError("data", _short(data), "a JSON object", '{"member": "did:icn:alice"}')])
    return rule.runtime.manage(action, data)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _short_json(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:65] + f"... ({len(text)} chars)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:65] + f"... ({len(text)} chars)"
