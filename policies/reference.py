"""Renders the policy reference (docs/policy-reference.md) from the models themselves.

``python -m policies.reference > docs/policy-reference.md``; a test checks the file is current.
"""

from __future__ import annotations

import inspect
import json
import typing
from enum import Enum

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from policies.model import CoopPolicy, CoopQuota, MemberQuota, ResourceAmounts, Rule, ScoringWeights, SharingLimit

RULES: tuple[type[BaseModel], ...] = typing.get_args(typing.get_args(Rule)[0])
"""Every rule type a policy accepts (built-in, plug-in, expression), in the union's order."""


def _type_name(annotation: typing.Any) -> str:
    annotation = _plain(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    if len(args) == 1 and type(None) in typing.get_args(annotation):
        return _type_name(args[0]) + " or null"
    if annotation == SharingLimit:
        return "fraction in [0, 1] or ResourceAmounts"
    text = str(annotation).replace("typing.", "").replace("policies.priority.", "").replace("<class '", "")
    text = text.replace("'>", "").replace("policies.model.", "").replace("NoneType", "null")
    for long, short in (("Annotated[Union[", "Union["),):
        text = text.replace(long, short)
    if "DataSovereignty" in text and "TaskLimits" in text:
        return "list of rules (see below)"
    return text.replace(" | ", " or ").replace("|", " or ")


def _plain(annotation: typing.Any) -> typing.Any:
    """``tuple[Annotated[int, validator], ...]`` as ``tuple[int, ...]``: the validators are not the type."""
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is typing.Annotated:
            return tuple[typing.get_args(args[0])[0], ...]
    return annotation


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else "`" + json.dumps(_jsonable(field.default_factory())) + "`"
    return "`" + json.dumps(_jsonable(field.default)) + "`"


def _jsonable(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "value"):
        return value.value
    return value


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = ["| field | type | default | meaning | example |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        example = f"`{json.dumps(field.examples[0])}`" if field.examples else ""
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} | {example} |")
    return rows


def _doc(model: type) -> str:
    return inspect.cleandoc(model.__doc__ or "")


def render() -> str:
    out = ["# Policy reference", "",
           "Generated from the models by `python -m policies.reference`; do not edit by hand.", "",
           "A policy is JSON. Validate a file with `coopsched policy validate FILE`; examples live in "
           "`policies/examples/`.", "", "## CoopPolicy", "", _doc(CoopPolicy), ""]
    out += _fields(CoopPolicy)
    out += ["", "## MemberQuota", "", _doc(MemberQuota), ""] + _fields(MemberQuota)
    out += ["", "## CoopQuota", "", _doc(CoopQuota), ""] + _fields(CoopQuota)
    out += ["", "## ResourceAmounts", "", _doc(ResourceAmounts), ""] + _fields(ResourceAmounts)
    out += ["", "## ScoringWeights", "", _doc(ScoringWeights),
            "Features, each in [0, 1]: trust; capacity (mean free share of CPU, memory and GPUs); "
            "queue (1 / (1 + running + reported queue)); rtt (1 / (1 + rtt_ms / 50)); data (share of the task's "
            "data bytes already on the node); hints (share of the given hint kinds matched).", ""]
    out += _fields(ScoringWeights)
    out += ["", "## Rules", "", "Every rule has `type` (below) and an optional `name` shown in messages.", ""]
    for rule in RULES:
        out += [f"### {rule.__name__}", "", _doc(rule), ""]
        out += _fields(rule, skip=("type", "name"))
        examples = (rule.model_config.get("json_schema_extra") or {}).get("examples") or []
        if examples:
            out += ["", "```json", json.dumps(examples[0]), "```"]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
