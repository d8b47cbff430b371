"""Which failures use up a job's attempts: errors from real gRPC peers, alive, dead or gone, and a
store that does not answer, as faults.classify sees them."""

from __future__ import annotations

import socket
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from libs.store.client import ObjectStore, StoreUnavailable, retry_window
from libs.store.settings import StoreSettings
from services.gateway.faults import Fault, classify


def _handler(request: bytes, context: grpc.ServicerContext) -> bytes:
    what = request.decode()
    if what == "slow":
        time.sleep(2)
    elif what == "refuse":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a portrait")
    elif what == "busy":
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "no free slot")
    elif what == "crash":
        raise RuntimeError("the engine failed")
    return b"ok"


@pytest.fixture(scope="module")
def peer():
    """A real gRPC server on port 0 with health and a test method: its target."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Peer", {"Call": grpc.unary_unary_rpc_method_handler(_handler)})])
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _error(target: str, what: str, timeout: float = 0.5) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/test.Peer/Call")(what.encode(), timeout=timeout)
    return caught.value


def _alive(target: str):
    def check() -> bool:
        with grpc.insecure_channel(target) as channel:
            try:
                return health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5).status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False
    return check


def test_refusals_fail_at_once_crashes_count_and_busy_replicas_do_not(peer):
    assert classify(_error(peer, "refuse")) is Fault.PERMANENT
    assert classify(_error(peer, "crash")) is Fault.JOB
    assert classify(_error(peer, "busy")) is Fault.BUSY


def test_a_gone_peer_is_an_outage():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    err = _error(f"127.0.0.1:{port}", "fast", timeout=2)
    assert err.code() == grpc.StatusCode.UNAVAILABLE and classify(err) is Fault.OUTAGE


def test_deadline_exceeded_is_an_outage_only_when_the_peer_does_not_answer(peer):
    slow = _error(peer, "slow")
    assert slow.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert classify(slow, _alive(peer)) is Fault.JOB  # alive: the step itself took too long
    # A peer that accepts connections and never answers (a hung process, a black-holed route).
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        target = f"127.0.0.1:{hung.getsockname()[1]}"
        silent = _error(target, "fast")
        assert silent.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert classify(silent, _alive(target)) is Fault.OUTAGE


def test_a_store_that_does_not_answer_is_an_outage():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = ObjectStore(StoreSettings(endpoint=f"127.0.0.1:{port}", access_key="k", secret_key="s"))
    started = time.monotonic()
    with retry_window(0.5), pytest.raises(StoreUnavailable) as caught:
        store.stat("tasks/x.json")
    assert time.monotonic() - started < 5
    assert classify(caught.value) is Fault.OUTAGE
