"""Prometheus metrics of the gRPC services: RPCs by method and code, engine jobs, failures by reason."""

from __future__ import annotations

import time

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPCS = Counter("talkserve_rpcs_total", "gRPC calls handled, by method and status code", ["method", "code"])
RPC_SECONDS = Histogram("talkserve_rpc_seconds", "time to answer unary gRPC calls", ["method"],
                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
JOBS_RUNNING = Gauge("talkserve_jobs_running", "engine jobs running on this replica")
JOB_SECONDS = Histogram("talkserve_job_seconds", "wall time of engine jobs that finished",
                        buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
JOB_FAILURES = Counter("talkserve_job_failures_total", "engine jobs that did not finish, by reason", ["reason"])


def serve_metrics(port: int | None, host: str) -> None:
    """Expose /metrics over HTTP when a port is configured."""
    if port is not None:
        start_http_server(port, addr=host)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts every RPC by method and final status; times unary ones."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        def unary(request, context):
            started = time.monotonic()
            try:
                response = inner(request, context)
            except Exception:
                code = context.code() if hasattr(context, "code") and context.code() else grpc.StatusCode.UNKNOWN
                RPCS.labels(method, getattr(code, "name", str(code))).inc()
                raise
            code = context.code() if hasattr(context, "code") and context.code() else grpc.StatusCode.OK
            RPCS.labels(method, getattr(code, "name", str(code))).inc()
            RPC_SECONDS.labels(method).observe(time.monotonic() - started)
            return response

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
