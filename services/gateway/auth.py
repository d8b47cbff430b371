"""API keys: who is calling, which tasks they may see, and how fast they may call.

A pure ASGI middleware reads `Authorization: Bearer <key>` (or `X-API-Key`) on every
request outside a short list of public paths (the web page, the API docs, health and
metrics), refuses unknown keys with 401, missing ones with 401 when keys are required, and
spends a token of the key's rate-limit buckets (429 with `Retry-After` when empty). It
puts the caller into a context variable for the request, so every router can stamp new
tasks with the caller's key id and answer 404 for a task that belongs to another key.

With keys off (the local default) every caller is anonymous and sees every anonymous task:
nothing changes for existing clients. Records store the key's id (a hash prefix), never
the key.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.tasks import TaskRecord
from services.gateway.errors import ApiError, error_response
from services.gateway.settings import GatewaySettings

HASHED_PREFIX = "sha256:"

# Reachable without a key: the web page and its files, the API docs and theirs, probes and metrics.
PUBLIC_PATHS = frozenset({"/", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
                          "/api/health", "/health", "/metrics", "/livez", "/readyz", "/v1/info"})
# /v1/results/ links carry the gateway's signature instead of a key (routers/results.py checks it).
PUBLIC_PREFIXES = ("/ui/", "/docs-static/", "/v1/results/")


def key_id_for_hash(hex_digest: str) -> str:
    """The id a key is known by in task records and logs: a prefix of its SHA-256."""
    return "key_" + hex_digest[:16]


def key_id(key: str) -> str:
    """The id of a key given in the clear."""
    return key_id_for_hash(hashlib.sha256(key.encode()).hexdigest())


@dataclass(frozen=True)
class Caller:
    """The client behind a request: an API key's id and name, or anonymous (None)."""

    key_id: str | None = None
    name: str | None = None

    def owns(self, record: TaskRecord) -> bool:
        """True when the task was made by this caller (anonymous callers own anonymous tasks)."""
        return record.key_id == self.key_id


ANONYMOUS = Caller()
_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("talkserve_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the request being handled (anonymous outside a request)."""
    return _current.get()


def current_key_id() -> str | None:
    """The key id to stamp on a task created now."""
    return _current.get().key_id


def visible(record: TaskRecord) -> bool:
    """May the current caller see this task? Routers answer 404 when not, as for a missing task."""
    return current_caller().owns(record)


def scoped(namespace: str) -> str:
    """A per-key namespace (Idempotency-Key entries), so two keys never share one."""
    kid = current_key_id()
    return namespace if kid is None else f"{namespace}/{kid}"


async def _caller_dep() -> Caller:
    return current_caller()


CallerDep = Annotated[Caller, Depends(_caller_dep)]


def native_error(status: int, code: str, message: str, detail: object = None,
                 headers: dict[str, str] | None = None) -> ApiError:
    """An error of talkserve's own API: `{"error": {"code", "message", "detail"?}}`."""
    body: dict = {"code": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return ApiError(status, {"error": body}, headers)


class TokenBucket:
    """`rate` tokens a second up to `burst`; thread-safe."""

    def __init__(self, per_minute: float, burst: int):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend a token; returns 0 on success, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


class ApiKeys:
    """The configured keys and each key's rate-limit buckets."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.required = settings.require_api_keys
        entries = settings.api_keys.items() if isinstance(settings.api_keys, dict) else \
            ((k, None) for k in settings.api_keys)
        # sha256 hex of the key -> name; keys are compared by hash, so the key never sits in memory
        # as configured text longer than start-up and hashed entries work the same way.
        self._by_hash: dict[str, str | None] = {}
        for key, name in entries:
            key = key.strip()
            digest = key[len(HASHED_PREFIX):].lower() if key.startswith(HASHED_PREFIX) else \
                hashlib.sha256(key.encode()).hexdigest()
            self._by_hash[digest] = name
        if self.required and not self._by_hash:
            raise ValueError("require_api_keys is on but no api_keys are configured")
        self.configured = bool(self._by_hash)
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def identify(self, presented: str) -> Caller | None:
        """The caller a presented key belongs to, or None for an unknown key."""
        digest = hashlib.sha256(presented.strip().encode()).hexdigest()
        if digest not in self._by_hash:
            return None
        return Caller(key_id_for_hash(digest), self._by_hash[digest])

    def _bucket(self, kid: str, which: str) -> TokenBucket | None:
        s = self.settings
        per_minute, burst = ((s.create_rate_limit_per_minute, s.create_rate_limit_burst) if which == "create"
                             else (s.rate_limit_per_minute, s.rate_limit_burst))
        if per_minute <= 0:
            return None
        with self._lock:
            return self._buckets.setdefault((kid, which), TokenBucket(per_minute, burst))

    def throttle(self, caller: Caller, creates: bool) -> float:
        """0 when the call may go ahead, else the seconds the caller should wait."""
        if caller.key_id is None:
            return 0.0
        for which in (("create", "any") if creates else ("any",)):
            bucket = self._bucket(caller.key_id, which)
            wait = bucket.take() if bucket else 0.0
            if wait:
                return wait
        return 0.0


def _presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def _creates(method: str, path: str) -> bool:
    # Every POST starts work except cancelling; those count against the stricter bucket.
    return method == "POST" and not path.endswith("/cancel")


class ApiKeyMiddleware:
    """Authenticates and rate-limits every non-public request before it reaches a router."""

    def __init__(self, app: ASGIApp, keys: ApiKeys):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        # No keys at all (the local default): headers are not even looked at, so nothing changes
        # for clients that happen to send an Authorization header of their own.
        presented = _presented_key(Headers(scope=scope)) if self.keys.configured else None
        challenge = {"WWW-Authenticate": 'Bearer realm="talkserve"'}
        if presented is not None:
            caller = self.keys.identify(presented)
            if caller is None:
                await error_response(scope, 401, "invalid_api_key", "The API key is not valid.",
                                     headers=challenge)(scope, receive, send)
                return
        elif self.keys.required:
            await error_response(scope, 401, "missing_api_key",
                                 "An API key is required: send 'Authorization: Bearer <key>'.",
                                 headers=challenge)(scope, receive, send)
            return
        else:
            caller = ANONYMOUS
        wait = self.keys.throttle(caller, _creates(scope["method"], path))
        if wait:
            seconds = max(1, math.ceil(wait))
            await error_response(scope, 429, "rate_limited", f"Too many requests; retry in {seconds} s.",
                                 headers={"Retry-After": str(seconds)})(scope, receive, send)
            return
        token = _current.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
