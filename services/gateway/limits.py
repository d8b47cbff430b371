"""What one request may cost the gateway: the size of a body read whole, JSON nesting, store waits.

A pure ASGI middleware in front of every route:

- A body that a handler (or FastAPI) reads whole — JSON, urlencoded forms, anything but the
  multipart uploads of the routes marked `streams_uploads`, which stream to disk with their
  own per-file limits — may have at most `max_body_bytes`. A larger one is refused with 413
  before it is held in memory: by its Content-Length at once, or as soon as the bytes read
  pass the limit. The rest of the body is read and dropped (up to DRAIN_BYTES) so the client,
  which sends its whole body before it reads the answer, gets the 413 instead of a reset.
- A JSON body may nest arrays and objects at most `max_json_depth` deep (400 otherwise):
  Python's parser recurses per level and fails on deep input with RecursionError.
- Store operations of the request retry an unreachable store for `store_request_retry_seconds`
  only, so a client hears 503 with Retry-After within seconds rather than after the store
  client's own 30 s.

Errors answer in the shape of the request's API (errors.error_response).
"""

from __future__ import annotations

import re
import time
from typing import Callable

import numpy as np
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.store.client import set_retry_window
from services.gateway.errors import error_response, route_of
from services.gateway.settings import GatewaySettings

# How much of an oversized body is read and dropped before the 413 goes out, and for how long.
DRAIN_BYTES = 1024 * 1024 * 1024
DRAIN_SECONDS = 60.0

_STREAMED: set[Callable] = set()
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def streams_uploads(endpoint: Callable) -> Callable:
    """Mark a route whose multipart body is streamed to disk with per-file limits (not read whole)."""
    _STREAMED.add(endpoint)
    return endpoint


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not count)."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if brackets.size == 0:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _is_json(content_type: str) -> bool:
    return content_type in ("", "application/json") or content_type.endswith("+json")


class RequestLimits:
    """Enforces the limits above on every HTTP request."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings):
        self.app = app
        self.max_bytes = settings.max_body_bytes
        self.max_depth = settings.max_json_depth
        self.store_window = settings.store_request_retry_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The request runs in a task of its own: this holds for it, and the threads it uses, only.
        set_retry_window(self.store_window)
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        length = headers.get("content-length")
        has_body = (length is not None and length.strip() != "0") or "chunked" in headers.get("transfer-encoding", "")
        if not has_body or (content_type == "multipart/form-data" and self._streams(scope)):
            await self.app(scope, receive, send)
            return
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send, more=True)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send, more)
                return
        if _is_json(content_type) and json_depth(bytes(body)) > self.max_depth:
            await error_response(scope, 400, "too_deep", f"the JSON body nests deeper than {self.max_depth} "
                                 "levels")(scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    @staticmethod
    def _streams(scope: Scope) -> bool:
        return getattr(route_of(scope), "endpoint", None) in _STREAMED

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, more: bool) -> None:
        drained, deadline = 0, time.monotonic() + DRAIN_SECONDS
        while more and drained < DRAIN_BYTES and time.monotonic() < deadline:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        await error_response(scope, 413, "too_large", f"the request body is larger than the limit of "
                             f"{self.max_bytes} bytes")(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the body read already to the app, then passes on what comes next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
