"""`Idempotency-Key` on create endpoints: a replay returns the first answer; another body is a 409.

A replay is marked on the request (`replayed(request)`), so the native API answers it with
`Idempotent-Replayed: true`.

The key is claimed in the store with a create-only write before the task exists, so two
racing requests with the same key make one task between them, across gateway replicas.
"""

from __future__ import annotations

import hashlib
import json
from typing import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from libs.store.client import AlreadyExists, NotFound
from services.gateway.errors import ApiError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


def body_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _entry(api: str, key: str) -> str:
    return f"idempotency/{api}/{hashlib.sha256(key.encode()).hexdigest()}.json"


async def once(request: Request, gw, api: str, digest: str, task_id: str, respond: Callable[[], Awaitable[dict]],
               error: Callable[..., ApiError], discard: Callable[[], Awaitable[None]]) -> dict:
    """Run `respond` (which creates the task) once per key; replays get the stored answer."""
    key = request.headers.get(HEADER)
    if key is None:
        return await respond()
    if not key or len(key) > MAX_KEY_LENGTH:
        await discard()
        raise error(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
    entry = _entry(api, key)
    claim = {"body": digest, "task_id": task_id, "response": None}
    try:
        await run_in_threadpool(gw.store.create_json, entry, claim, {})
    except AlreadyExists:
        await discard()
        try:
            stored, _, _ = await run_in_threadpool(gw.store.read_json, entry)
        except NotFound:
            raise error(409, f"the earlier request with this {HEADER} failed and is being removed; retry")
        if stored["body"] != digest:
            raise error(409, f"{HEADER} was already used with a different request body")
        if stored["response"] is None:
            raise error(409, f"the request with this {HEADER} is still being processed; retry",
                        headers={"Retry-After": "1"})
        request.state.idempotent_replayed = True
        return stored["response"]
    try:
        response = await respond()
    except BaseException:
        await run_in_threadpool(gw.store.delete, entry)
        raise
    await run_in_threadpool(gw.store.put_bytes, entry,
                            json.dumps(claim | {"response": response}).encode(), "application/json")
    return response


def replayed(request: Request) -> bool:
    """True when `once` answered this request with a stored answer."""
    return bool(getattr(request.state, "idempotent_replayed", False))
