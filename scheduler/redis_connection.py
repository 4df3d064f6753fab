"""What ``scheduler.redis_store.RedisStore`` and its ledger (``scheduler.redis_ledger``) share about talking
to the server: key components escaped (``%`` -> ``%25``, ``:`` -> ``%3A``), replies decoded from bytes, and
redis errors re-raised with the store's URL (password hidden) in their message."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis

if TYPE_CHECKING:
    from scheduler.redis_store import RedisStore


def _esc(part: object) -> str:
    return str(part).replace("%", "%25").replace(":", "%3A")


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))


def _naming_url(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Re-raise a redis error with the store's URL (password hidden) in its message, same type."""
    @functools.wraps(fn)
    def wrapper(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except redis.RedisError as exc:
            message = f"redis store {self._where}: {exc}"
            try:
                named = type(exc)(message)
            except Exception:
                named = redis.RedisError(message)
            raise named from exc
    return wrapper


def _public_methods_name_url(cls: type) -> type:
    for name, attr in list(vars(cls).items()):
        if callable(attr) and not name.startswith("_"):
            setattr(cls, name, _naming_url(attr))
    return cls
