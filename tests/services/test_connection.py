"""The keepalive policies of talkserve's gRPC clients and servers match: idle pings never get GOAWAY.

gRPC servers by default answer a client that pings an idle connection more often than every
5 minutes with GOAWAY `too_many_pings`, which fails the call that starts at that moment. The
test scales the intervals down (a client pinging every 0.3 s) and watches the channel's
connectivity: a GOAWAY drops it from READY and it connects again.
"""

from __future__ import annotations

import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from libs.grpcutil.connection import (KEEPALIVE_TIME_MS, MIN_PING_INTERVAL_MS, client_options,
                                      server_options)


def _dropped_while_idle(server_args, seconds: float = 5.0) -> bool:
    """Whether an idle client's connection was dropped within `seconds` (left READY)."""
    server = grpc.server(futures.ThreadPoolExecutor(2), options=server_args)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=client_options(keepalive_ms=300))
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append, try_to_connect=True)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        time.sleep(seconds)
        seen = list(states)
        # A call on the long-idle channel goes through either way (it reconnects after a GOAWAY).
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        return seen[seen.index(grpc.ChannelConnectivity.READY):] != [grpc.ChannelConnectivity.READY]
    finally:
        channel.close()
        server.stop(0)


def test_idle_keepalive_pings_are_accepted_by_talkserve_servers():
    # Without a matching policy the server sends GOAWAY and the channel reconnects (the control).
    assert _dropped_while_idle([])
    # With the servers' policy (scaled like the client's) the connection stays up.
    assert not _dropped_while_idle(server_options(min_ping_interval_ms=200))


def test_documented_values_match():
    # Servers accept pings somewhat more often than clients send them (timers jitter).
    assert MIN_PING_INTERVAL_MS < KEEPALIVE_TIME_MS
    client = dict(client_options())
    server = dict(server_options())
    assert client["grpc.keepalive_time_ms"] == KEEPALIVE_TIME_MS
    assert client["grpc.keepalive_permit_without_calls"] == server["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
