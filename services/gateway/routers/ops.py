"""Operations endpoints: Prometheus metrics, liveness that touches nothing else, readiness.

Readiness (`/readyz`) is about what this gateway needs to answer its clients: the object
store (every request reads or writes it). It also reports the media service and the
replicas of each model service, which do not make the gateway unready: without them jobs
wait in the queue, and status, lists and downloads still work.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.context import GatewayDep
from services.gateway.startup import started

router = APIRouter(tags=["Operations"])


class ServiceState(BaseModel):
    """A service the gateway calls, as it answers now."""

    serving: int = Field(description="replicas that answer SERVING on grpc.health.v1")
    replicas: int = Field(description="replicas the gateway knows of")


class Readiness(BaseModel):
    """Whether this gateway can answer clients, and what it reaches."""

    status: str = Field(description="ready; starting while the gateway waits for the object store at start; "
                                    "not_ready while the store is unreachable")
    store: bool = Field(description="the object store answered a signed request just now")
    services: dict[str, ServiceState] = Field(description="media and each model kind")


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    """Prometheus metrics: queue depth and running tasks per model kind, task outcomes and durations."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/livez")
def livez() -> dict:
    """The process answers HTTP (for liveness probes; readiness is /readyz)."""
    return {"status": "alive"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness,
    "description": "the object store is unreachable, or the gateway still waits for it at start"}})
async def readyz(gw: GatewayDep, request: Request) -> JSONResponse:
    """Ready (200) once started and while the object store answers; 503 otherwise. The services are reported too."""
    clients = gw.clients

    def replicas(kind: str) -> ServiceState:
        found = list(clients.replicas.get(kind, []))
        return ServiceState(serving=sum(1 for r in found if r.serving(timeout=1.0)), replicas=len(found))

    def media() -> ServiceState:
        return ServiceState(serving=int(clients.media.serving(timeout=1.0)), replicas=1)

    # Every check at once (each gives up after 1-2 s), so the probe answers within its timeout.
    store, media_state, *kinds = await asyncio.gather(
        run_in_threadpool(gw.store.ping), run_in_threadpool(media),
        *(run_in_threadpool(replicas, kind) for kind in clients.replicas))
    services = {"media": media_state, **dict(zip(clients.replicas, kinds))}
    ready = store and started(request.app)
    status = "ready" if ready else ("not_ready" if started(request.app) else "starting")
    body = Readiness(status=status, store=store, services=services)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
