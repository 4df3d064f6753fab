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

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_MAX_SHOWN = 80


class FieldError(typing.NamedTuple):
    path: str
    received: str
    accepted: str
    example: str

    def __str__(self) -> str:
        text = f"{self.path or '(root)'}: received {self.received}; accepted: {self.accepted}"
        return text + (f"; example: {self.example}" if self.example else "")


class InvalidRequest(ValueError):
    """Bad input from a caller. Nothing was changed and nobody was charged."""

    def __init__(self, what: str, errors: list[FieldError]):
        self.what = what
        self.errors = errors
        super().__init__(f"invalid {what}: " + " | ".join(str(e) for e in errors))

    def __reduce__(self):  # survive pickling across Ray boundaries
        return (InvalidRequest, (self.what, self.errors))


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
        raise explain(exc, model, what) from None


def trusted(model: type[M], **values: Any) -> M:
    """Build ``model`` from values the core made and already trusts: no validation, no defaults.

    Every field must be given. Used on the scheduling hot path, where pydantic's
    ``model_construct`` costs more than the decision itself; input from outside always goes
    through :func:`parse`.
    """
    obj = model.__new__(model)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def explain(exc: ValidationError, model: type[BaseModel], what: str) -> InvalidRequest:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        path = _path(loc)
        received = _shown(err.get("input"))
        accepted = err.get("msg", "a valid value")
        errors.append(FieldError(path, received, accepted, _example(model, loc)))
    return InvalidRequest(what, errors)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
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
