"""Every HTTP request observed: its request id (`X-Request-ID`, accepted or made, echoed on the
answer and set for every log line it causes) and the HTTP metrics, by route template and status.

Outermost middleware, so answers made before a route runs (keys, rate limits, body limits,
an unready gateway) carry the id and are counted too.
"""

from __future__ import annotations

import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.grpcutil.requestid import valid
from libs.logs import REQUEST_ID
from services.gateway.errors import route_of
from services.gateway.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

HEADER = "X-Request-ID"


def _route(scope: Scope) -> str:
    """The route template (`/v1/jobs/{job_id}`), never the raw path: labels stay few."""
    route = scope.get("route") or route_of(scope)
    path = getattr(route, "path", None)
    return path or "unmatched"


class RequestObserver:
    """Sets the request id and records the request's metrics."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = valid(Headers(scope=scope).get(HEADER)) or uuid.uuid4().hex
        # The request runs in a task of its own: the id holds for it and the threads it uses.
        REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route(scope)
            HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            HTTP_REQUEST_SECONDS.labels(scope["method"], route).observe(time.perf_counter() - started)
