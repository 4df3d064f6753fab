"""Rule type ``expression``: a boolean pre-check over task and member fields, written in CEL.

    {"type": "expression", "name": "small-gpu-jobs",
     "expression": "task.gpus == 0.0 || (task.gpus <= 2.0 && \\"gpu\\" in task.tags)",
     "message": "GPU tasks must carry the 'gpu' tag and ask for at most 2 GPUs",
     "code": "rejected"}

The expression must be true for a task to pass; when it is false the task gets a
``code`` reason carrying ``message``. An expression that fails at evaluation (a missing
map key, an index out of range, a division by zero, a type mismatch) or returns
something other than a bool gives an ``error`` reason (strict: rejected; permissive:
admitted with a warning).

**The activation** (what an expression can read; see :data:`VARIABLES`):

- ``task``: a map with ``cpus``, ``gpus`` (double), ``memory_mb``, ``gpu_memory_mb``
  (int), ``priority`` (string: low, normal, high, critical), ``priority_rank`` (int,
  1 = low .. 4 = critical), ``tags`` (list of strings), ``max_runtime_s`` (double: the
  runtime limit admission works with, the task's own or the quota's default),
  ``name`` (string or null), ``task_id`` (string), ``capabilities`` (map of name to
  minimum version, "" for any), ``data`` (list of data keys from the hints);
- ``member``, ``coop_id`` (strings);
- ``now`` (timestamp, UTC), ``hour`` (int 0-23, UTC) and ``weekday`` (int, 0 = Sunday
  .. 6 = Saturday, UTC, as in ``TimeWindow``).

Numbers compare across int and double (``task.cpus <= 8`` works), but arithmetic does
not mix them (``task.cpus * 2.0``, not ``task.cpus * 2``). Usage this month is not in
the activation: quota belongs to the quota fields, which project it correctly.

**Compiled once.** An expression is parsed when its policy is validated, and the
compiled program is kept per expression string (so a new policy version, a restarted
head or ``coopsched policy validate`` with the same expression reuses it). A syntax
error fails validation at ``expression`` with the line and column; so does a variable
or a ``task`` field that does not exist. Evaluation builds only the part of the
activation the expression reads.

**The CEL package: common-expression-language** (PyPI; Python bindings of the Rust
``cel`` interpreter, https://github.com/hardbyte/python-common-expression-language).
Measured here (Python 3.11, the 2-core development machine, p50 unless said), for
``task.cpus <= 8 && ("gpu" in task.tags || task.gpus == 0) && member != "mallory"``:

==================================  ==========  ==========================  ===========
package                             compile     evaluate                    import
==================================  ==========  ==========================  ===========
common-expression-language 0.10.0   ~37 us [1]  ~9-15 us (p99 ~20 us) [2]   ~170 ms [3]
cel-python 0.5.0                    ~640 us     ~700-850 us                 ~70 ms
cel-expr-python 0.1.3               ~170 us     ~10 us                      ~4 ms [4]
==================================  ==========  ==========================  ===========

[1] ``cel.compile`` alone; with this module's analysis of the names read, ~130-150 us,
once per expression. [2] the program's ``execute`` with the 4 values this expression
reads; building that activation adds ~2.3 us, so the rule's ``check`` costs ~14-22 us
(p99 ~33-44 us). Nearly all of it is converting Python values (~2 us per value): handing
over the whole task map costs ~30 us, hence the activation holds only what the
expression reads. [3] the package also imports its command-line tool (typer, rich); it
is imported only when a policy has an expression rule. [4] plus protobuf, which it needs
but does not declare.

cel-python (Cloud Custodian's pure-Python implementation) is well maintained and more
downloaded, but at ~0.7 ms per evaluation it would cost more than all of admission
(~25 us per submission without rules). common-expression-language is released regularly
(0.10 in 2026), builds on a maintained interpreter, ships wheels (no compiler needed) and
meets the tens-of-microseconds bar. Google's own binding (cel-expr-python) is as fast
and type-checks at compile time, but it is at 0.1 and needs an undeclared protobuf.
``benchmarks/expression_cost.py`` measures the cost per submission against the same
check written as a Python rule and as a plug-in.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from policies.reasons import Reason, ReasonCode, error
from policies.rules import _applies, _Rule

if TYPE_CHECKING:
    from policies.rules import RuleContext
    from scheduler.tasks import TaskSpec

_Getter = Callable[["TaskSpec", "RuleContext"], Any]


def _utc(ctx: RuleContext) -> dt.datetime:
    return dt.datetime.fromtimestamp(ctx.now, dt.timezone.utc)


TASK_FIELDS: dict[str, _Getter] = {
    "cpus": lambda t, c: float(t.resources.cpus),
    "gpus": lambda t, c: float(t.resources.gpus),
    "memory_mb": lambda t, c: t.resources.memory_mb,
    "gpu_memory_mb": lambda t, c: t.resources.gpu_memory_mb,
    "priority": lambda t, c: t.priority.value,
    "priority_rank": lambda t, c: t.priority.rank,
    "tags": lambda t, c: list(t.tags),
    "max_runtime_s": lambda t, c: float(c.runtime_s),
    "name": lambda t, c: t.name,
    "task_id": lambda t, c: t.task_id,
    "capabilities": lambda t, c: {k: v or "" for k, v in t.capabilities.items()},
    "data": lambda t, c: list(t.hints.data),
}
"""The fields of ``task`` in the activation, and how each is read."""

VARIABLES: dict[str, _Getter] = {
    "member": lambda t, c: t.member,
    "coop_id": lambda t, c: t.coop_id,
    "now": lambda t, c: _utc(c),
    "hour": lambda t, c: int(c.now // 3600 % 24),
    "weekday": lambda t, c: (_utc(c).weekday() + 1) % 7,
}
"""The top-level variables besides ``task``."""

_MACROS = ("all", "exists", "exists_one", "map", "filter", "transformList", "transformMap")
_STRING = re.compile(r"""[rR]?(\"\"\"|'''|"|')""")
_TASK_FIELD = re.compile(r"(?<![\w.])task\s*\.\s*([A-Za-z_]\w*)")
_TASK_ANY = re.compile(r"(?<![\w.])task(?!\w)")
_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(?:Syntax error:\s*)?([^\n]*)")

_compilations = 0


def compilations() -> int:
    """How many expressions this process has compiled (each distinct string once)."""
    return _compilations


class ExpressionError(ValueError):
    """An expression that cannot be compiled: what is wrong, where (1-based line and column), why."""

    def __init__(self, what: str, detail: str, line: int | None = None, column: int | None = None):
        self.what, self.detail, self.line, self.column = what, detail, line, column
        where = f" at line {line}, column {column}" if line is not None else ""
        super().__init__(f"{what}{where}: {detail}")


@dataclass(frozen=True)
class CompiledExpression:
    """A compiled CEL program and the getters of the activation it reads."""

    source: str
    program: Any
    variables: tuple[tuple[str, _Getter], ...]
    task_fields: tuple[tuple[str, _Getter], ...] | None  # None: the expression does not read ``task``

    def activation(self, task: TaskSpec, ctx: RuleContext) -> dict[str, Any]:
        act = {name: get(task, ctx) for name, get in self.variables}
        if self.task_fields is not None:
            act["task"] = {name: get(task, ctx) for name, get in self.task_fields}
        return act

    def evaluate(self, task: TaskSpec, ctx: RuleContext) -> Any:
        return self.program.execute(self.activation(task, ctx))


@functools.lru_cache(maxsize=4096)
def compile_expression(source: str) -> CompiledExpression:
    """Compile ``source`` once (per distinct string). Raises ``ExpressionError``.

    The cache is also how a rule finds its program at each check (a lookup costs ~0.1 us);
    only a process that saw more than 4,096 distinct expressions would compile one again.
    """
    global _compilations
    import cel  # the CEL package is imported only when a policy has an expression rule

    _compilations += 1
    try:
        program = cel.compile(source)
    except Exception as exc:  # the package raises ValueError with "<input>:LINE:COL: Syntax error: ..."
        text = str(exc)
        match = _POSITION.search(text)
        if match:
            raise ExpressionError("syntax error", match.group(3)[:160], int(match.group(1)),
                                  int(match.group(2))) from None
        raise ExpressionError("syntax error", text[:200]) from None
    code = _blank_strings(source)
    variables = []
    for name in program.variables():
        if name == "task":
            continue
        if name in VARIABLES:
            variables.append((name, VARIABLES[name]))
        elif not re.search(r"\.\s*(?:%s)\s*\(\s*%s\s*," % ("|".join(_MACROS), re.escape(name)), code):
            line, column = _where(code, re.search(r"(?<![\w.])%s(?!\w)" % re.escape(name), code))
            raise ExpressionError("unknown variable", f"{name!r}; the variables are task, "
                                  f"{', '.join(VARIABLES)}", line, column)
    task_fields: tuple[tuple[str, _Getter], ...] | None = None
    if "task" in program.variables():
        named = list(_TASK_FIELD.finditer(code))
        for match in named:
            if match.group(1) not in TASK_FIELDS:
                line, column = _where(code, match, group=1)
                raise ExpressionError("unknown field", f"task.{match.group(1)}; task has "
                                      f"{', '.join(TASK_FIELDS)}", line, column)
        if len(named) == len(_TASK_ANY.findall(code)):  # every use is task.FIELD: build only those
            wanted = dict.fromkeys(m.group(1) for m in named)
            task_fields = tuple((f, TASK_FIELDS[f]) for f in wanted)
        else:  # the map itself is used (``"gpus" in task``, ``task["cpus"]``): build all of it
            task_fields = tuple(TASK_FIELDS.items())
    return CompiledExpression(source, program, tuple(variables), task_fields)


def _blank_strings(source: str) -> str:
    """``source`` with the insides of string literals and ``//`` comments blanked (positions kept), to
    scan names: a name in a comment is no field the rule reads, and a quote in one opens no string."""
    out, i = [], 0
    while True:
        match = _STRING.search(source, i)
        comment = source.find("//", i)
        if comment != -1 and (match is None or comment < match.start()):
            end = source.find("\n", comment)
            end = len(source) if end == -1 else end
            out.append(source[i:comment] + " " * (end - comment))
            i = end
            continue
        if match is None:
            out.append(source[i:])
            return "".join(out)
        quote, start = match.group(1), match.end()
        raw = match.group(0)[0] in "rR"
        j = start
        while j < len(source) and not source.startswith(quote, j):
            j += 2 if source[j] == "\\" and not raw else 1
        out.append(source[i:start] + re.sub(r"[^\n]", " ", source[start:j]))
        i = min(j + len(quote), len(source))
        out.append(source[j:i])


def _where(code: str, match: re.Match | None, group: int = 0) -> tuple[int | None, int | None]:
    if match is None:
        return None, None
    start = match.start(group)
    before = code[:start]
    return before.count("\n") + 1, start - (before.rfind("\n") + 1) + 1


class ExpressionRule(_Rule):
    """Tasks (those carrying one of ``tags``, or all) must make ``expression`` true.

    ``expression`` is CEL over `task` (cpus, gpus, memory_mb, gpu_memory_mb, priority,
    priority_rank, tags, max_runtime_s, name, task_id, capabilities, data), `member`,
    `coop_id`, `now`, `hour` and `weekday` (UTC; 0 = Sunday), compiled once when the
    policy is validated; a syntax error is reported with its line and column. When it
    is false the task gets ``code`` with ``message``; when it fails or is not a bool,
    an `error` reason. See `policies.expression` for the activation in full.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"type": "expression", "name": "gpu-tagged", "expression": 'task.gpus == 0.0 || "gpu" in task.tags',
         "message": "GPU tasks must carry the 'gpu' tag", "code": "rejected"}]})

    type: Literal["expression"] = "expression"
    expression: str = Field(min_length=1, max_length=4000, examples=['task.cpus <= 8 && "gpu" in task.tags'],
                            description="a CEL expression that must be true for the task to pass")
    message: str | None = Field(default=None, max_length=500, examples=["GPU tasks must carry the 'gpu' tag"],
                                description="shown to the member when it is false (default: the expression)")
    code: Literal["rejected", "unavailable"] = Field(default="rejected", examples=["rejected"], description=(
        "`rejected`: the task will not fit as submitted; `unavailable`: it may fit later"))
    tags: tuple[str, ...] = Field(default=(), max_length=64, examples=[["gpu"]],
                                  description="applies to tasks carrying one of these (all tasks when empty)")

    @field_validator("expression")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compile_expression(v)
        except ExpressionError as exc:
            raise PydanticCustomError("cel_expression", "a CEL boolean expression ({detail})",
                                      {"detail": str(exc)}) from None
        return v

    @property
    def compiled(self) -> CompiledExpression:
        """The compiled program (kept per expression string; compiled when the rule was validated)."""
        return compile_expression(self.expression)

    def check(self, task: TaskSpec, ctx: RuleContext) -> Reason | None:
        if self.tags and not _applies(self.tags, task):
            return None
        try:
            out = self.compiled.evaluate(task, ctx)
        except Exception as exc:
            return error(self.label, f"expression {self.expression!r} failed on this task: "
                         f"{type(exc).__name__}: {exc}; a coop admin should fix the rule")
        if out is True:
            return None
        if out is False:
            return Reason(code=ReasonCode(self.code), source=self.label,
                          message=self.message or f"this coop requires {self.expression}")
        return error(self.label, f"expression {self.expression!r} gave {type(out).__name__} {out!r}, not a bool; "
                     "a coop admin should fix the rule")
