"""Resolving a plug-in URI to the object it names (see ``policies.plugins`` for the whole story).

First the entry-point group ``coopsched.rules`` (what the operator installed), then a dotted path
``package.module:attr`` inside a package the operator lists in ``COOPSCHED_PLUGIN_MODULES``: a coop
admin writes policies, and a dotted path anywhere would let one call any importable function with
the rule's parameters, as the head. Python's standard library, built-ins and coopsched's own
packages are never plug-ins, and no step of the attribute path may leave the package.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from typing import Any

from policies.plugin_runner import PluginError

ENTRY_POINT_GROUP = "coopsched.rules"
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")
_NEVER_PLUGINS = frozenset({"builtins", "scheduler", "executors", "policies", "ray", "cloudpickle", "redis"})
PLUGIN_MODULES_ENV = "COOPSCHED_PLUGIN_MODULES"


def allowed_plugin_modules() -> tuple[str, ...]:
    """The packages whose dotted paths a policy may name (``COOPSCHED_PLUGIN_MODULES``, read on each use)."""
    return tuple(p.strip() for p in os.environ.get(PLUGIN_MODULES_ENV, "").split(",") if p.strip())


class PluginNotFound(PluginError):
    """A URI that names no installed plug-in."""


def resolve(uri: str) -> Any:
    """The object a plug-in URI names: an entry point of ``coopsched.rules``, else a dotted path.

    The entry points are read once per ``sys.path`` (reading them costs tens of ms with
    many packages installed) and read afresh before a URI is declared unknown, so a
    plug-in installed while the head runs is found.
    """
    found = _from_entry_points(uri, _entry_points())
    if found is not None:
        return found
    why = ""
    if _DOTTED.match(uri):
        try:
            return _import(uri)
        except PluginError as exc:
            why = str(exc)
    points = _entry_points(fresh=True)
    found = _from_entry_points(uri, points)
    if found is not None:
        return found
    name, _, version = uri.partition(":")
    versions = sorted(ep.name for ep in points if ep.name.partition(":")[0] == name)
    if versions:
        why = f"no entry point {uri!r}: installed versions of {name!r} are {', '.join(versions)}"
    elif not why:
        why = f"no entry point {uri!r} and not a dotted path"
    installed = ", ".join(sorted(ep.name for ep in points)) or "none"
    raise PluginNotFound(f"a plug-in from entry-point group {ENTRY_POINT_GROUP!r} as NAME:VERSION (installed: "
                         f"{installed}) or an importable 'package.module:attr' ({why})")


_entry_point_cache: tuple[tuple[str, ...], tuple] | None = None


def _entry_points(fresh: bool = False) -> tuple:
    global _entry_point_cache
    key = tuple(sys.path)
    if fresh or _entry_point_cache is None or _entry_point_cache[0] != key:
        _entry_point_cache = (key, tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)))
    return _entry_point_cache[1]


def _from_entry_points(uri: str, points: tuple) -> Any | None:
    name, _, version = uri.partition(":")
    chosen = [ep for ep in points if ep.name == uri] or [ep for ep in points if ep.name == name]
    if not chosen:
        return None
    try:
        return chosen[0].load()
    except Exception as exc:
        raise PluginNotFound(f"an installed plug-in; entry point {chosen[0].name!r} = {chosen[0].value!r} "
                             f"of group {ENTRY_POINT_GROUP!r} failed to load: {type(exc).__name__}: {exc}") from None


def _import(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
        if not module_name:
            raise PluginNotFound(f"{path!r} names no attribute of a module")
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in _NEVER_PLUGINS:
        raise PluginNotFound(f"{module_name!r} is part of Python or of coopsched, not a plug-in package")
    allowed = allowed_plugin_modules()
    if not any(module_name == a or module_name.startswith(a + ".") for a in allowed):
        raise PluginNotFound(
            f"{module_name!r} is not in a plug-in package this head allows (the operator lists them in "
            f"{PLUGIN_MODULES_ENV}, comma-separated, e.g. 'coop_rules,lab.quota'; allowed now: "
            f"{', '.join(allowed) or 'none'}); an installed plug-in is named by its entry point of group "
            f"{ENTRY_POINT_GROUP!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginNotFound(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if part.startswith("_"):
            raise PluginNotFound(f"{path!r} names a private attribute ({part!r}); name the plug-in itself")
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginNotFound(f"module {module_name!r} has no attribute {attr!r}") from None
        # each step must stay inside the allowed packages: a module they import (os) is not a plug-in
        home = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
        if not isinstance(home, str) or not any(home == a or home.startswith(a + ".") for a in allowed):
            raise PluginNotFound(f"{path!r} leads out of the allowed plug-in packages (to {home!r}); name a "
                                 f"class or factory defined in {module_name!r}")
    return obj
