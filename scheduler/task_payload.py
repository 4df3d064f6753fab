"""A job's payload: ``(fn, args, kwargs)`` pickled once, as the member signs it, and, when that fails,
which part of it cannot be pickled.

The happy path pickles once. Only when that fails are the parts pickled one by one (``fn``, each
``args[i]``, each ``kwargs[name]``, then inside the first that fails: list, tuple and dict items,
an object's attributes, a function's variables and globals, a bound method's object) to name the
smallest one that cannot be sent.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from typing import Any

from ray import cloudpickle

from policies.validation import FieldError, InvalidRequest, quoted

_MAX_DEPTH = 6  # how far into nested lists and dicts the culprit is followed
_VALUE_ACCEPTED = ("a value that can be pickled (numbers, text, lists, dicts, dataclasses, arrays, importable "
                   "functions); not a lock, socket, open file, database connection or generator, which belong "
                   "to this process: pass what makes one (a path, a URL) and make it inside the function")
_VALUE_EXAMPLE = "client.submit(count_rows, \"data.db\", ...) with def count_rows(path): sqlite3.connect(path)..."
_FN_ACCEPTED = ("a function that can be pickled: a module's function, or a lambda or closure whose variables "
                "and globals can be pickled (make a connection, lock or file inside the function)")
_FN_EXAMPLE = "math.sqrt, or def count_rows(path): conn = sqlite3.connect(path); ..."


def pickled_call(fn: Callable, args: tuple, kwargs: dict, *, item: int | None = None) -> bytes:
    """``cloudpickle.dumps((fn, args, kwargs))``, or ``InvalidRequest`` naming the part that cannot be pickled
    (``item``: the position of ``args[0]`` in ``Client.map``'s iterable, named ``iterable[item]``)."""
    try:
        return cloudpickle.dumps((fn, tuple(args), dict(kwargs)))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001  # TypeError, PicklingError, RecursionError, a __reduce__'s own error
        raise _unpicklable(fn, args, kwargs, item, exc) from None


def _unpicklable(fn: Callable, args: tuple, kwargs: dict, item: int | None, whole: Exception) -> InvalidRequest:
    parts = [("fn", fn)] + [(f"iterable[{item}]" if item is not None else f"args[{i}]", value)
                            for i, value in enumerate(args)] + [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
    for path, value in parts:
        error = _pickle_error(value)
        if error is not None:
            path, value, error = _smallest(path, value, error, 0)
            return _invalid(path, value, error)
    # each part pickles alone, not together (rare: e.g. nested deeper than the stack allows only as a whole)
    return InvalidRequest("task", [FieldError("(fn, args, kwargs)", _why(whole), _VALUE_ACCEPTED,
                                              _VALUE_EXAMPLE)])


def _smallest(path: str, value: Any, error: Exception, depth: int) -> tuple[str, Any, Exception]:
    """The innermost part of ``value`` (at ``path``) that cannot be pickled."""
    if depth < _MAX_DEPTH:
        for child_path, child in _children(path, value):
            child_error = _pickle_error(child)
            if child_error is not None:
                return _smallest(child_path, child, child_error, depth + 1)
    return path, value, error


def _children(path: str, value: Any) -> Iterator[tuple[str, Any]]:
    """The parts of ``value`` a pickler would write, each with its path (nothing for other kinds of value)."""
    if type(value) in (list, tuple):
        yield from ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif type(value) is dict:
        yield from ((f"{path}[{quoted(k, 40)}]", v) for k, v in value.items())
    elif isinstance(value, types.FunctionType):
        code = value.__code__
        for name, cell in zip(code.co_freevars, value.__closure__ or ()):
            try:
                yield f"{path} (its variable {name!r})", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        yield from ((f"{path} (the global {name!r} it uses)", value.__globals__[name])
                    for name in code.co_names if name in value.__globals__)
    elif isinstance(value, (types.MethodType, types.BuiltinMethodType)) and not isinstance(
            value.__self__, types.ModuleType):  # (a builtin function's __self__ is its module)
        yield f"{path} (its object)", value.__self__
    elif not isinstance(value, (type, types.ModuleType)) and isinstance(getattr(value, "__dict__", None), dict):
        yield from ((f"{path}.{name}", v) for name, v in vars(value).items())


def _pickle_error(value: Any) -> Exception | None:
    try:
        cloudpickle.dumps(value)
        return None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        return exc


def _why(error: Exception) -> str:
    """The pickler's complaint, on one short line."""
    try:
        text = " ".join(f"{type(error).__name__}: {error}".split())
    except Exception:  # noqa: BLE001  # an exception whose str() fails
        text = type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _invalid(path: str, value: Any, error: Exception) -> InvalidRequest:
    received = f"{quoted(value, 60)} (a {type(value).__module__}.{type(value).__qualname__}: {_why(error)})"
    in_fn = path.startswith("fn")
    accepted = _FN_ACCEPTED if in_fn and callable(value) else _VALUE_ACCEPTED
    return InvalidRequest("task", [FieldError(path, received, accepted, _FN_EXAMPLE if in_fn else _VALUE_EXAMPLE)])
