"""Who is asking: Ed25519 keys, signed request envelopes and their verification (pure: no Ray, no store).

A client signs every call to the head with its Ed25519 private key::

    key = generate_key()                                  # or load_private_key("alice.key")
    envelope = sign_request(key, "usage", ("timebank:seattle", "did:icn:alice"), {}, now=time.time())

and the head checks it with a :class:`RequestVerifier` that holds the registered keys::

    verifier = RequestVerifier({p.key_id: p for p in principals}, clock=time.time)
    who = verifier.verify("usage", args, kwargs, envelope)   # a Principal, or a Refusal

What is signed (``request_bytes``): the method name, the SHA-256 of a canonical encoding
of the arguments (``args_digest``), the timestamp, the nonce and the key id, one per line.
The canonical encoding is JSON with sorted keys and no spaces of a typed form of the arguments
(``_typed``: dicts, lists and substituted values are tagged, so two different calls never encode
alike); ``bytes`` are replaced by their SHA-256 (so a pickled payload is covered by the signature
without being copied into it) and Ray object references by their hex id. Altering any argument, the method, the time
or the nonce makes the signature fail (``forged``).

Refusals are values, :class:`Refusal` (``code``, ``message``), with codes ``unsigned``,
``unknown_key``, ``forged``, ``expired``, ``replayed`` and ``forbidden`` (the last one is
``scheduler.authorization``'s); each message says how to fix it.

Replay: a request is accepted only if its timestamp is within ``window_s`` of the
verifier's clock, after ``not_before`` (the head passes its start time, so a request made to
a previous incarnation cannot be replayed to a restarted head with an empty cache), and its
(key id, nonce) was not seen within the window. The nonce cache
is bounded (``max_nonces``): when it is full the oldest entries go, and from then on a
request not newer than the newest evicted one is refused as ``expired`` — it could be a
replay the cache no longer remembers — so a full cache never lets a replay through.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "DEFAULT_WINDOW_S",
    "Principal",
    "Refusal",
    "RefusalCode",
    "RequestVerifier",
    "Role",
    "SignedRequest",
    "args_digest",
    "generate_key",
    "key_id_of",
    "load_private_key",
    "private_key_pem",
    "public_key_b64",
    "public_key_from_b64",
    "read_public_key",
    "request_bytes",
    "save_key_pair",
    "sign_request",
]

DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_NONCES = 100_000
ID_LIMIT = 200
MAX_SIGNED_DEPTH = 200  # how deeply nested the arguments of a signed request may be


class Role(str, Enum):
    OPERATOR = "operator"   # the key given when the head starts: everything
    ADMIN = "admin"         # one coop's policy, quotas, executors and keys
    MEMBER = "member"       # submits as itself, reads its own jobs and usage
    EXECUTOR = "executor"   # its own heartbeats and usage reports


class RefusalCode(str, Enum):
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    FORGED = "forged"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    FORBIDDEN = "forbidden"


class Refusal(BaseModel):
    """A request the head will not carry out: nothing was changed and nobody was charged."""

    model_config = ConfigDict(frozen=True)

    code: RefusalCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


# ----------------------------------------------------------------------------- keys
def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes (what ``coopsched keys add`` takes)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a base64 public key; ``ValueError`` saying what was wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise ValueError(f"a public key is base64 of 32 bytes (44 characters, e.g. as printed by "
                         f"`coopsched keys new`); received {str(text)[:60]!r}") from None
    if len(raw) != 32:
        raise ValueError(f"a public key is base64 of 32 bytes; received {len(raw)} bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def key_id_of(public_b64: str) -> str:
    """A short, stable id of a public key: ``k_`` + the first 16 hex digits of its SHA-256."""
    raw = base64.b64decode(public_b64.strip(), validate=True)  # as Principal stores it: "KEY\n" is KEY
    return "k_" + hashlib.sha256(raw).hexdigest()[:16]


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def save_key_pair(key: Ed25519PrivateKey, directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (PEM, mode 0600, created so, never world-readable) and ``NAME.pub`` (base64).

    Neither file may exist (``FileExistsError`` naming it): both are created exclusively, the public one
    first, and both are removed again if either cannot be created or written whole (a full disk), so no
    key file is overwritten and no lone or broken half of a pair is left behind."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    pem, pub = private_key_pem(key), (public_key_b64(key) + "\n").encode()
    made: list[Path] = []
    try:
        for path, data, mode in ((public, pub, 0o644), (private, pem, 0o600)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            made.append(path)
            with os.fdopen(fd, "wb") as f:  # (closes fd, written or not)
                f.write(data)
        os.chmod(private, 0o600)
    except BaseException:
        for path in made:  # only the files made here: one that existed is never touched
            try:
                path.unlink()
            except OSError:
                pass
        raise
    return private, public


def load_private_key(source: str | Path | bytes | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """A private key from a PEM file path, PEM bytes/text, or a key object; ``ValueError`` otherwise."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data = source.encode()
    elif isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            shown = str(path) if len(str(path)) <= 200 and "\n" not in str(path) else \
                "(the text given is neither PEM key text nor a path: not shown, it may be a key)"
            raise ValueError(f"cannot read the private key file {shown}: {exc.strerror or type(exc).__name__}; "
                             "make one with `coopsched keys new --name NAME`") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError("not an unencrypted PEM Ed25519 private key (as written by `coopsched keys new`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"the private key is {type(key).__name__}, not Ed25519; make one with `coopsched keys new`")
    return key


def read_public_key(source: str | Path) -> str:
    """A base64 public key given as itself, as a ``.pub`` file, or as a private key file (its public half)."""
    text = str(source).strip()
    try:
        public_key_from_b64(text)
        return text
    except ValueError:
        pass
    path = Path(text)
    if not path.exists():
        raise ValueError(f"{text[:60]!r} is neither a base64 public key nor a file; give the NAME.pub "
                         "written by `coopsched keys new` or the key it printed")
    try:
        content = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, binary
        raise ValueError(f"{text[:60]!r} cannot be read as a key file ({type(exc).__name__}); give the NAME.pub "
                         "written by `coopsched keys new` or the key it printed") from None
    if content.startswith("-----BEGIN"):
        return public_key_b64(load_private_key(content))
    public_key_from_b64(content)
    return content


# ----------------------------------------------------------------------------- who
class Principal(BaseModel):
    """A registered key and what it may do: its role, its coop, and the member or executor it is."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra={"examples": [
        {"public_key": "x5mT3m0K6lZk0l8nY2b1cN3v9a3s1Q0l2m4n6p8r0t4=", "role": "member",
         "coop_id": "timebank:seattle", "subject": "did:icn:alice"}]})

    public_key: str = Field(description="base64 of the 32 raw Ed25519 public-key bytes",
                            examples=["x5mT3m0K6lZk0l8nY2b1cN3v9a3s1Q0l2m4n6p8r0t4="])
    role: Role = Field(examples=["member"])
    coop_id: str | None = Field(default=None, min_length=1, max_length=ID_LIMIT,
                                description="the coop (None only for the operator)", examples=["timebank:seattle"])
    subject: str = Field(min_length=1, max_length=ID_LIMIT,
                         description="the member id, executor id, or a name for an admin/operator",
                         examples=["did:icn:alice"])

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        public_key_from_b64(value)
        return value.strip()

    @model_validator(mode="after")
    def _coop_unless_operator(self) -> Principal:
        if self.coop_id is None and self.role is not Role.OPERATOR:
            raise ValueError(f"a {self.role.value} key belongs to one coop; give coop_id, e.g. 'timebank:seattle'")
        return self

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def describe(self) -> str:
        where = f" of coop {self.coop_id}" if self.coop_id else ""
        return f"{self.role.value} {self.subject}{where} (key {self.key_id})"


# ----------------------------------------------------------------------------- what is signed
class SignedRequest(BaseModel):
    """The envelope a client sends beside a call's arguments."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: str = Field(min_length=1, max_length=64)
    timestamp: float = Field(allow_inf_nan=False)
    nonce: str = Field(min_length=8, max_length=64)
    signature: str = Field(min_length=1, max_length=200)


def _canonical_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, Enum):
        return value.value
    hex_id = getattr(value, "hex", None)  # a Ray ObjectRef: its id is what travels
    if callable(hex_id) and type(value).__name__ in ("ObjectRef", "ObjectID"):
        return {"ref": hex_id()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot sign an argument of type {type(value).__name__}; send plain data "
                    "(JSON values, bytes, object references)")


def _typed_key(key: Any) -> list:
    if isinstance(key, (str, int, float, bool)) or key is None:
        return [type(key).__name__, key]
    return ["x", _typed(_canonical_default(key))]


def _typed(value: Any, depth: int = 0) -> Any:
    """A one-to-one form of the arguments, so that two different calls never sign the same: a dict is
    ``["d", [[typed key, value], ...]]`` (sorted; ``{1: x}`` is not ``{"1": x}``), a list or tuple
    ``["l", [...]]``, anything encoded by ``_canonical_default`` (bytes, sets, enums, refs, models)
    ``["x", ...]`` (bytes are not the dict ``{"sha256": ...}``); strings, numbers, booleans and None
    are themselves."""
    if depth > MAX_SIGNED_DEPTH:
        raise ValueError(f"arguments nested more than {MAX_SIGNED_DEPTH} deep cannot be signed")
    if isinstance(value, dict):
        items = [[_typed_key(k), _typed(v, depth + 1)] for k, v in value.items()]
        return ["d", sorted(items, key=lambda kv: json.dumps(kv[0], sort_keys=True, default=str))]
    if isinstance(value, (list, tuple)):
        return ["l", [_typed(v, depth + 1) for v in value]]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return ["x", _typed(_canonical_default(value), depth + 1)]


def args_digest(args: tuple | list, kwargs: Mapping[str, Any] | None = None) -> str:
    """SHA-256 (hex) of the canonical JSON of ``[args, kwargs]`` (in the typed form of ``_typed``);
    ``bytes`` count by their own SHA-256."""
    text = json.dumps(_typed([list(args), dict(kwargs or {})]), sort_keys=True, separators=(",", ":"),
                      default=_canonical_default, ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def request_bytes(method: str, digest: str, timestamp: float, nonce: str, key_id: str) -> bytes:
    return "\n".join(("coopsched-request-v2", method, digest, repr(float(timestamp)), nonce, key_id)).encode()


def sign_request(key: Ed25519PrivateKey, method: str, args: tuple | list, kwargs: Mapping[str, Any] | None,
                 *, now: float, nonce: str | None = None) -> dict:
    """The envelope (as a dict) for one call of ``method`` with these arguments, at time ``now``."""
    key_id = key_id_of(public_key_b64(key))
    nonce = nonce or secrets.token_hex(16)
    message = request_bytes(method, args_digest(args, kwargs), now, nonce, key_id)
    return {"key_id": key_id, "timestamp": float(now), "nonce": nonce,
            "signature": base64.b64encode(key.sign(message)).decode()}


# ----------------------------------------------------------------------------- verification
class RequestVerifier:
    """The key registry and the nonce cache: ``verify(...)`` answers a Principal or a Refusal."""

    def __init__(self, principals: Mapping[str, Principal] | None = None, *, clock: Callable[[], float],
                 window_s: float = DEFAULT_WINDOW_S, max_nonces: int = DEFAULT_MAX_NONCES,
                 not_before: float = float("-inf")) -> None:
        """``not_before``: refuse (as expired) anything signed at or before this time — a head passes the
        time it started, because a restarted head's nonce cache is empty and could not tell a replay of a
        request made to its previous incarnation (the client signs every retry afresh)."""
        if not window_s > 0:
            raise ValueError(f"window_s must be positive (seconds), e.g. 60; received {window_s!r}")
        self.clock = clock
        self.window_s = float(window_s)
        self.max_nonces = max(1, int(max_nonces))
        self._principals: dict[str, Principal] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # (key id, nonce) -> timestamp
        self._forgotten_until = not_before  # newest timestamp it cannot check for replay (start, evictions)
        self._not_before = not_before
        for principal in (principals or {}).values():
            self.add(principal)

    # -- the registry
    changes = 0
    """Bumped by every ``add`` and ``remove``: a reload from the store applies its read only if nothing
    changed meanwhile (``RequestGate._load_keys``)."""

    def add(self, principal: Principal) -> None:
        self.changes += 1
        self._principals[principal.key_id] = principal
        self._public[principal.key_id] = public_key_from_b64(principal.public_key)

    def remove(self, key_id: str) -> Principal | None:
        self.changes += 1
        self._public.pop(key_id, None)
        return self._principals.pop(key_id, None)

    def get(self, key_id: str) -> Principal | None:
        return self._principals.get(key_id)

    def principals(self) -> list[Principal]:
        return sorted(self._principals.values(), key=lambda p: (p.coop_id or "", p.role.value, p.subject))

    # -- one request
    def verify(self, method: str, args: tuple | list, kwargs: Mapping[str, Any] | None,
               envelope: Mapping[str, Any] | SignedRequest | None, *, check_freshness: bool = True
               ) -> Principal | Refusal:
        """Who signed this call, or why it is refused. ``check_freshness=False`` skips the time window
        and the nonce (for usage reports, which are idempotent and may wait in the tracker's inbox)."""
        if envelope is None:
            return Refusal(code=RefusalCode.UNSIGNED, message=(
                f"request {method!r} is not signed and this head verifies every request; give your key "
                "(Client(key='NAME.key'), --key NAME.key or COOPSCHED_KEY); make one with `coopsched keys new`"))
        try:
            signed = envelope if isinstance(envelope, SignedRequest) else SignedRequest.model_validate(envelope)
        except (ValueError, TypeError):
            return Refusal(code=RefusalCode.UNSIGNED, message=(
                f"request {method!r} carries a malformed signature envelope (expected key_id, timestamp, nonce, "
                "signature); sign it with scheduler.identity.sign_request"))
        principal, public = self._principals.get(signed.key_id), self._public.get(signed.key_id)
        if principal is None or public is None:
            return Refusal(code=RefusalCode.UNKNOWN_KEY, message=(
                f"key {signed.key_id} is not registered with this head; ask your coop admin to run "
                "`coopsched keys add --coop COOP --role member --id YOUR_ID YOUR_PUBLIC_KEY`"))
        try:
            signature = base64.b64decode(signed.signature, validate=True)
            message = request_bytes(method, args_digest(args, kwargs), signed.timestamp, signed.nonce,
                                    signed.key_id)
            public.verify(signature, message)
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            return Refusal(code=RefusalCode.FORGED, message=(
                f"the signature of request {method!r} does not match its content or key {signed.key_id} "
                "(altered on the way, or signed with another key); sign each request with the private key "
                "of the registered public key"))
        if not check_freshness:
            return principal
        now = self.clock()
        if signed.timestamp <= self._forgotten_until and abs(now - signed.timestamp) <= self.window_s:
            if signed.timestamp <= self._not_before:
                return Refusal(code=RefusalCode.EXPIRED, message=(
                    f"request {method!r} was signed at {signed.timestamp:.3f}, before this head (re)started, so it "
                    "cannot be told from a replay; sign it again (the client does so, for a few seconds)"))
            return Refusal(code=RefusalCode.EXPIRED, message=(
                f"request {method!r} was signed at {signed.timestamp:.3f}, before the oldest request this head "
                "still remembers (its replay cache is full, or its clock stepped back), so it cannot be told from "
                "a replay; sign it again with this machine's clock in step with the head's (NTP)"))
        if abs(now - signed.timestamp) > self.window_s:
            return Refusal(code=RefusalCode.EXPIRED, message=(
                f"request {method!r} was signed at {signed.timestamp:.3f}, {now - signed.timestamp:+.1f} s from "
                f"the head's clock; accepted: within ±{self.window_s:g} s; check this machine's clock (NTP) "
                "and sign each request when it is sent"))
        self._expire(now)
        seen_key = (signed.key_id, signed.nonce)
        if seen_key in self._seen:
            return Refusal(code=RefusalCode.REPLAYED, message=(
                f"request {method!r} with nonce {signed.nonce[:16]} was already received; every request needs "
                "a fresh nonce (the client makes one per call; do not resend a signed request)"))
        self._seen[seen_key] = signed.timestamp
        while len(self._seen) > self.max_nonces:
            _, evicted_ts = self._seen.popitem(last=False)
            self._forgotten_until = max(self._forgotten_until, evicted_ts)
        return principal

    def _expire(self, now: float) -> None:
        """Forget the oldest-received nonces whose timestamps left the window (a request carrying one
        would be refused as expired anyway). Entries arrive roughly in time order, so this pops from
        the front and stops at the first one still inside; the cache size bounds the rest."""
        horizon = now - self.window_s
        while self._seen:
            key, ts = next(iter(self._seen.items()))
            if ts >= horizon:
                break
            del self._seen[key]
            self._forgotten_until = max(self._forgotten_until, ts)  # if the clock steps back, a replay of
            # it must not pass as new

    def nonces_held(self) -> int:
        return len(self._seen)
