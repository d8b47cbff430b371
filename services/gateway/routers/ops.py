"""Operations endpoints: Prometheus metrics and a liveness check that touches nothing else."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["Operations"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    """Prometheus metrics: queue depth and running tasks per model kind, task outcomes and durations."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@router.get("/livez")
def livez() -> dict:
    """The process answers HTTP (for liveness probes; readiness is /api/health)."""
    return {"status": "alive"}
