"""Build and run a talkserve gRPC server: health, reflection, graceful shutdown on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic_settings import BaseSettings

from libs.grpcutil.connection import server_options
from libs.grpcutil.errors import Classifier
from libs.grpcutil.interceptor import ErrorInterceptor
from libs.grpcutil.metrics import MetricsInterceptor, serve_metrics
from libs.grpcutil.requestid import RequestIdInterceptor

log = logging.getLogger(__name__)

# Messages carry object keys, never media; the limit stays at gRPC's default on purpose.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ServerSettings(BaseSettings):
    """Where a service listens and how it stops."""

    host: str = "127.0.0.1"
    port: int = 0
    max_workers: int = 16
    grace_seconds: float = 30.0
    # Prometheus /metrics over HTTP on this port; unset means no metrics endpoint.
    metrics_port: int | None = None


@dataclass
class GrpcServer:
    """A started gRPC server with its health servicer."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool = True) -> None:
        """Report SERVING (or NOT_SERVING) for the server and each of its services."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        """Go NOT_SERVING, refuse new RPCs and let running ones finish within `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def create_server(
    settings: ServerSettings,
    register: Callable[[grpc.Server], Iterable[str]],
    classify: Classifier | None = None,
) -> GrpcServer:
    """Create and start a server; `register` adds servicers and returns their full names.

    The request id of the call's metadata is set for its log lines (RequestIdInterceptor).
    Requests are validated and failures mapped to statuses by ErrorInterceptor (`classify`
    maps the service's own exceptions first). Health starts NOT_SERVING: the caller flips it
    once its engine is loaded.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers),
        interceptors=[RequestIdInterceptor(), MetricsInterceptor(), ErrorInterceptor(classify)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *server_options(),
        ],
    )
    names = tuple(register(server))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}")
    server.start()
    serve_metrics(settings.metrics_port, settings.host)
    handle = GrpcServer(server=server, port=port, health=health_servicer, service_names=names)
    handle.set_serving(False)
    log.info("gRPC server listening on %s:%d (%s)", settings.host, port, ", ".join(names))
    return handle


def serve_until_signal(handle: GrpcServer, grace: float, on_stop: Callable[[], None] | None = None) -> None:
    """Block until SIGTERM or SIGINT, then stop gracefully."""
    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("signal %d: draining for up to %.0f s", signum, grace)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A signal delivered to one of gRPC's threads only flags the main thread; Python runs the
    # handler when the main thread next executes bytecode, so never block here indefinitely.
    while not stop.wait(0.5):
        pass
    if on_stop is not None:
        on_stop()
    handle.stop(grace)
    log.info("stopped")
