"""Turning pydantic validation errors into messages that say how to fix them.

Every public entry point parses its input with :func:`parse`. A failure raises
:class:`InvalidRequest`, whose message names, for each problem, the field (as a JSON
path), the value received, what is accepted and a valid example, e.g.::

    invalid task: resources.cpus: received -2; accepted: Input should be greater than 0; example: 2
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)

_MAX_SHOWN = 80
_MAX_ACCEPTED = 300  # a validator's message may quote the input; keep it to a line or two
_MAX_KEY = 40  # a path part (a dict key from the input) longer than this is cut
_MAX_ERRORS = 10  # errors spelled out in the message; ``InvalidRequest.errors`` keeps all of them
_MAX_PART = 200  # what a message quotes of a caller's text (a path, a file name, a value) at most


class FieldError(typing.NamedTuple):
    path: str
    received: str
    accepted: str
    example: str

    def __str__(self) -> str:
        text = f"{_cut(self.path, _MAX_PART) or '(root)'}: received {_cut(self.received, _MAX_PART)}; " \
               f"accepted: {_cut(self.accepted, _MAX_ACCEPTED)}"
        return text + (f"; example: {_cut(self.example, _MAX_PART)}" if self.example else "")


class InvalidRequest(ValueError):
    """Bad input from a caller. Nothing was changed and nobody was charged."""

    def __init__(self, what: str, errors: list[FieldError]):
        self.what = what
        self.errors = errors
        shown = " | ".join(str(e) for e in errors[:_MAX_ERRORS])
        more = len(errors) - _MAX_ERRORS
        super().__init__(f"invalid {_cut(what, _MAX_PART)}: {shown}"
                         + (f" | ... and {more} more errors" if more > 0 else ""))

    def __reduce__(self):  # survive pickling across Ray boundaries
        return (InvalidRequest, (self.what, self.errors))


def _not_a_boolean(value: Any) -> Any:
    """Pydantic reads ``true`` as 1 for a number field; in a request or a policy it is a mistake (a flag typed
    where a count goes, YAML's ``yes``), so it is refused by name instead of becoming 1."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        raise PydanticCustomError("number_not_boolean", "a number (true and false are not numbers here)")
    return value


def _is_numpy_bool(value: Any) -> bool:
    """``numpy.True_`` and ``numpy.False_`` (not ``bool``s; pydantic reads them as 1 and 0 too), told by their
    type, so policies/ imports no numpy."""
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")


NOT_BOOL = BeforeValidator(_not_a_boolean)
"""``Annotated[float, NOT_BOOL]``: a number field that refuses booleans."""


def parse(model: type[M], data: Any, *, what: str | None = None) -> M:
    """Validate ``data`` (a dict, a JSON string or a model instance) as ``model``."""
    what = what or _snake(model.__name__)
    if isinstance(data, model):
        return data
    try:
        if isinstance(data, (str, bytes)):
            return model.model_validate_json(data)
        if isinstance(data, BaseModel):
            data = data.model_dump()
        return model.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, model, what, data) from None
    except RecursionError:  # nested deeper than Python's stack (a validator walked it): bad input too
        raise InvalidRequest(what, [FieldError("", f"<{type(data).__name__} nested too deep>",
                                               "JSON nested at most a few dozen levels deep",
                                               _example(model, ()))]) from None


def quoted(value: Any, limit: int = 40) -> str:
    """``value`` for a validator's message: its repr, unprintable characters escaped, cut to ``limit``."""
    try:
        text = repr(value)
    except Exception:  # an int of more than 4,300 digits has no repr; a broken object may raise anything
        text = f"<{type(value).__name__}>"
    return _cut(_printable(text), limit)


def check_texts(values: Any, limit: int, what: str, *, count: int | None = None) -> Any:
    """For validators: every string of ``values`` has 1-``limit`` characters (and there are at most ``count``)."""
    if count is not None and len(values) > count:
        raise ValueError(f"at most {count} {what} (got {len(values)})")
    for text in values:
        if not text or len(text) > limit:
            raise ValueError(f"{what} of 1-{limit} characters (got {quoted(text)})")
    return values


def trusted(model: type[M], **values: Any) -> M:
    """Build ``model`` from values the core made and already trusts: no validation, no defaults.

    Every field must be given. Used on the scheduling hot path, where pydantic's
    ``model_construct`` costs more than the decision itself; input from outside always goes
    through :func:`parse`.

    The models built this way are frozen, so pydantic never adds to their "fields set" (its
    ``model_copy`` and ``__copy__`` copy it first): instances of one model share one set of all
    its field names, instead of each holding its own (a set of ten names is ~700 bytes per
    object kept for the life of the job).
    """
    obj = _new(model)
    _set_dict(obj, "__dict__", values)
    fields_set = _ALL_FIELDS.get(model)
    if fields_set is None or len(fields_set) != len(values):
        fields_set = _all_fields(model, values)
    _set_fields_set(obj, fields_set)  # the slots' own setters: no attribute lookup on the class
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def trusted_maker(model: type[M], *names: str):
    """``trusted(model, ...)`` as a function of the values of ``names`` (every field of ``model``), in
    that order: for the few models built on every decision, where the keyword dict and the checks
    ``trusted`` makes per call cost about as much as the object. (Generated like a dataclass's
    ``__init__``: one dict display, no loop.)"""
    if set(names) != set(model.model_fields) or len(names) != len(set(names)):
        raise TypeError(f"trusted_maker({model.__name__}) needs each of its fields once: {sorted(model.model_fields)}")
    fields_set = _all_fields(model, dict.fromkeys(names))
    values = ", ".join(f"{name!r}: {name}" for name in names)
    source = (f"def make({', '.join(names)}):\n"
              f"    obj = _new(model)\n"
              f"    _set_dict(obj, '__dict__', {{{values}}})\n"
              f"    _set_fields_set(obj, fields_set)\n"
              f"    _set_extra(obj, None)\n"
              f"    _set_private(obj, None)\n"
              f"    return obj\n")
    scope = {"model": model, "fields_set": fields_set, "_new": _new, "_set_dict": _set_dict,
             "_set_fields_set": _set_fields_set, "_set_extra": _set_extra, "_set_private": _set_private}
    exec(source, scope)  # noqa: S102 - the source is made above from the model's own field names
    make = scope["make"]
    make.__qualname__ = make.__name__ = f"make_{model.__name__}"
    return make


_ALL_FIELDS: dict[type, set[str]] = {}


def _all_fields(model: type[BaseModel], values: dict[str, Any]) -> set[str]:
    if model.model_config.get("frozen") and set(values) == set(model.model_fields):
        _ALL_FIELDS[model] = set(model.model_fields)
        return _ALL_FIELDS[model]
    return set(values)


_new = object.__new__
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__pydantic_fields_set__.__set__  # type: ignore[attr-defined]
_set_extra = BaseModel.__pydantic_extra__.__set__  # type: ignore[attr-defined]
_set_private = BaseModel.__pydantic_private__.__set__  # type: ignore[attr-defined]


def explain(exc: ValidationError, model: type[BaseModel], what: str, data: Any = None) -> InvalidRequest:
    if isinstance(data, (str, bytes)):  # JSON text: its structure tells dict keys from union labels
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            data = None
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        path = _path(loc, data, missing=err.get("type") == "missing")
        received = _shown(err.get("input"))
        accepted = _cut(_printable(str(err.get("msg", "a valid value"))), _MAX_ACCEPTED)
        errors.append(FieldError(path, received, accepted, _example(model, loc)))
    return InvalidRequest(what, errors)


def _path(loc: tuple, data: Any = None, missing: bool = False) -> str:
    """``loc`` as a JSON path (``rules[0].TimeWindow.allowed_hours``), walking ``data`` alongside.

    pydantic adds union member labels to a location (``region.str``, ``region.tuple[str, ...]``):
    a name the input does not have there is such a label and is left out, unless it is the
    field a ``missing`` error is about. Discriminator tags stay (``rules[0].TimeWindow``): they
    say which rule type the input was read as. Keys from the input are cut to ``_MAX_KEY``
    characters, their unprintable characters escaped.
    """
    out = ""
    current, walking = data, data is not None
    for i, part in enumerate(loc):
        container = current if walking else None
        if walking:
            if isinstance(container, (list, tuple)) and isinstance(part, int) and 0 <= part < len(container):
                current = container[part]
            elif isinstance(container, dict) and container.get("type") == part:
                pass  # the discriminator tag (a rule's ``type``): stay on the object it chose
            elif isinstance(container, dict) and _has_key(container, part):
                current = container[part]
            elif isinstance(container, dict) and missing and i == len(loc) - 1:
                pass  # the missing field
            elif isinstance(container, (dict, list, tuple, *_PLAIN)) and isinstance(part, str) and part != "[key]":
                continue  # a union member's label
            else:
                walking = False  # an index past the end, or a value of a kind this walk does not know
        if part == "[key]":
            out += "[key]"
        elif isinstance(part, int) and not isinstance(container, dict):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _key(part)
    return out


_PLAIN = (str, bytes, int, float, bool, type(None))


def _has_key(mapping: dict, key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:
        return False


def _key(part: Any) -> str:
    text = _printable(str(part))  # cut without dots or brackets, which would read as path syntax
    return text if len(text) <= _MAX_KEY else text[: _MAX_KEY - 15] + f"\u2026({len(text)} chars)"


def _printable(text: str) -> str:
    """``text`` with control and format characters (NUL, RTL marks, zero-width joiners) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=True)
    except Exception:  # not JSON (a NaN key, an object whose repr fails, nesting deeper than the stack)
        try:
            text = ascii(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 15] + f"... ({len(text)} chars)"
    return text


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every BaseModel class mentioned in a (possibly nested, Optional, list) annotation."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.append(ann)
            continue
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            stack.append(typing.get_args(ann)[0])
        elif origin is not None or isinstance(ann, types.UnionType):
            stack.extend(typing.get_args(ann))
    return found


def _example(model: type[BaseModel], loc: tuple) -> str:
    """The example attached to the field at ``loc``, else the nearest model's example."""
    current: type[BaseModel] = model
    field_example: Any = None
    for part in loc:
        if not isinstance(part, str):
            continue
        field = current.model_fields.get(part)
        if field is None:
            # a discriminator tag (``rules.0.DataSovereignty.region``): pick that model
            tagged = [m for m in _models_in_union(current, part)]
            if tagged:
                current = tagged[0]
            continue
        field_example = field.examples[0] if field.examples else None
        nested = _models_in(field.annotation)
        if nested:
            current = nested[0] if len(nested) == 1 else _pick(nested, loc)
    if field_example is not None:
        return _shown(field_example)
    extra = current.model_config.get("json_schema_extra")
    if isinstance(extra, dict) and extra.get("examples"):
        return _shown(extra["examples"][0])
    return ""


def _models_in_union(current: type[BaseModel], tag: str) -> list[type[BaseModel]]:
    out = []
    for field in current.model_fields.values():
        for m in _models_in(field.annotation):
            if m.__name__ == tag or getattr(m, "model_fields", {}).get("type") and _tag_of(m) == tag:
                out.append(m)
    return out


def _pick(candidates: list[type[BaseModel]], loc: tuple) -> type[BaseModel]:
    tags = {str(p) for p in loc}
    for m in candidates:
        if m.__name__ in tags or _tag_of(m) in tags:
            return m
    return candidates[0]


def _tag_of(m: type[BaseModel]) -> str | None:
    field = m.model_fields.get("type")
    if field is None:
        return None
    return field.default if isinstance(field.default, str) else None


def _snake(name: str) -> str:
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out += " "
        out += ch.lower()
    return out
