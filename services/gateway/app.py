"""Build the gateway's FastAPI application: routers, error shapes, and the dispatcher's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from libs.store.client import ObjectStore
from libs.store.settings import StoreSettings
from libs.tasks import TaskStore
from services.gateway import docs_pages, native, openapi, startup
from services.gateway.auth import ApiKeyMiddleware, ApiKeys
from services.gateway.clients import Clients
from services.gateway.context import Gateway
from services.gateway.dispatcher import Dispatcher
from services.gateway.errors import install_handlers
from services.gateway.kinds import KINDS
from services.gateway.limits import RequestLimits
from services.gateway.metrics import registry_for
from services.gateway.observe import RequestObserver
from services.gateway.pipeline import Pipeline
from services.gateway.portrait import PortraitChecker
from services.gateway.retention import RetentionSweeper
from services.gateway.routers import (
    dicetalk,
    echofu_files,
    echofu_jobs,
    echomimic,
    jobs,
    latentsync,
    live,
    ops,
    results,
    tasks,
)
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

DESCRIPTION = """talkserve turns a portrait (or a video) and speech into a talking-head video.

Every endpoint of the DICE-Talk, EchoMimic and LatentSync API documents answers here at its
documented path. Results are made by talkserve's built-in engine unless a response names
another engine.

New clients use talkserve's own API under `/v1` (the **Jobs** section): one way to create
jobs of every kind from files or URLs, live progress as Server-Sent Events, presigned result
links, signed webhooks and API keys. The web page at `/` is built on it.
"""

STATIC = pathlib.Path(__file__).resolve().parent / "static"


def build_gateway(settings: GatewaySettings, store_settings: StoreSettings | None = None) -> Gateway:
    """The gateway's parts; nothing is started or contacted yet (startup.py waits for the store)."""
    store = ObjectStore(store_settings or StoreSettings())
    tasks = TaskStore(store)
    clients = Clients(settings.media_target, settings.model_targets())
    pipeline = Pipeline(settings, clients, tasks, store)
    portraits = PortraitChecker(settings.face_max_turn_degrees) if settings.face_check else None
    return Gateway(settings, store, tasks, clients, Dispatcher(settings, clients, tasks, pipeline, KINDS), portraits)


def create_app(settings: GatewaySettings | None = None, store_settings: StoreSettings | None = None) -> FastAPI:
    """The gateway app; the dispatcher runs while the app is up."""
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        gw = build_gateway(settings, store_settings)
        app.state.gateway = gw
        app.state.metrics = registry_for(gw.dispatcher)
        app.state.started = False
        sweeper = RetentionSweeper(gw.tasks, gw.store, settings)

        def start() -> None:
            native.start(app, gw)  # before dispatching: its webhooks hook into the dispatcher
            gw.dispatcher.start()
            sweeper.start()
            log.info("gateway %s ready", settings.gateway_id)

        starting = asyncio.create_task(startup.start_when_store_answers(app, gw, start))
        try:
            yield
        finally:
            starting.cancel()
            await live.close_all(app)
            if startup.started(app):
                sweeper.stop()
                gw.dispatcher.stop(settings.shutdown_grace_seconds)
                app.state.native.close()
            gw.clients.close()

    app = FastAPI(title="talkserve", version=settings.version, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    docs_pages.install(app)  # /docs and /redoc from the gateway's own files
    modules = (dicetalk, echomimic, latentsync, tasks, jobs, results, live, ops, echofu_files, echofu_jobs)
    install_handlers(app, [module.router for module in modules])
    # The last added runs first: keys and rate limits before a body is read.
    app.add_middleware(RequestLimits, settings=settings)
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys(settings))
    app.add_middleware(startup.StartGate)
    if settings.cors_allow_origins or settings.cors_allow_origin_regex:
        # Outside the keys and the start gate: a preflight is answered before a key is asked for
        # (browsers send none with it), and refusals (401, 429, 413, 503) carry the headers a page
        # needs to read them; inside the observer, so preflights have request ids and are counted.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins,
                           allow_origin_regex=settings.cors_allow_origin_regex,
                           allow_methods=settings.cors_allow_methods, allow_headers=settings.cors_allow_headers,
                           expose_headers=settings.cors_expose_headers,
                           allow_credentials=settings.cors_allow_credentials,
                           max_age=settings.cors_max_age_seconds)
    app.add_middleware(RequestObserver)  # outermost: every answer has its request id and is counted
    app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
    app.add_api_route("/", lambda: FileResponse(STATIC / "index.html"), include_in_schema=False)
    for module in modules:
        app.include_router(module.router)
    openapi.install(app)
    return app
