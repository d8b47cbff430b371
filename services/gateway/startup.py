"""Starting the gateway without its object store: it answers at once, reports not ready
(`/readyz` 503) and waits for the store, then starts the native API, the dispatcher and the
retention sweep. A store that comes up after the gateway (a fresh cluster, a restarted
MinIO) is the normal case in Kubernetes: the pod stays up, unready, instead of exiting.

Until then every route that needs the store answers 503 (`starting`, with `Retry-After`),
in its API's error shape; probes, metrics, the web page and the API docs answer as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.errors import error_response

log = logging.getLogger(__name__)

# Answer while the gateway waits for the store: probes, metrics, the page and the docs.
OPEN_PATHS = ("/livez", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json", "/ui/", "/favicon.ico")
RETRY_AFTER = "5"
# How often the reason for waiting is logged again.
LOG_EVERY = 30.0


def started(app) -> bool:
    """True once the gateway reached its store and started its work."""
    return bool(getattr(app.state, "started", False))


async def start_when_store_answers(app, gw, start: Callable[[], None], pause: float = 1.0) -> None:
    """Create the bucket (waiting for the store as long as it takes), then run `start` once."""
    waited, last_said = False, -LOG_EVERY
    for step in (gw.store.ensure_bucket, start):
        while True:
            try:
                await run_in_threadpool(step)
                break
            except Exception as exc:  # noqa: BLE001 - down, refusing our credentials, ...: keep waiting
                waited = True
                now = asyncio.get_running_loop().time()
                if now - last_said >= LOG_EVERY:  # say why, without a line a second
                    log.warning("waiting for the object store at %s: %s: %s; not ready until it answers",
                                gw.store.settings.endpoint, type(exc).__name__, exc)
                    last_said = now
                await asyncio.sleep(pause)
    if waited:
        log.info("the object store answers")
    app.state.started = True


class StartGate:
    """Answers 503 `starting` for routes that need the store until the gateway has started."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or started(scope["app"]) or _open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        response = error_response(scope, 503, "starting",
                                  "The gateway is starting: it waits for the object store; try again shortly.",
                                  headers={"Retry-After": RETRY_AFTER})
        await response(scope, receive, send)


def _open(path: str) -> bool:
    return path == "/" or any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS)
