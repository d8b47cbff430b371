"""The connection policy every talkserve gRPC client and server shares: keepalive, reconnects, retries.

Clients ping a connection that has been quiet for KEEPALIVE_TIME_MS, also with no call in
flight, so a dead peer (a killed pod, a dropped NAT entry) is noticed within
KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS instead of at the next call. gRPC servers by
default allow such pings only every 5 minutes and only during calls, and answer a client
that pings more often with GOAWAY `too_many_pings`, which fails whatever call is starting
on that connection. So servers here accept pings down to MIN_PING_INTERVAL_MS (below the
clients' interval, with room for timer jitter) with or without calls: the two sides match.

A lost connection is re-dialled within MAX_RECONNECT_BACKOFF_MS (gRPC's default lets the
gap grow to 2 minutes after a long outage), and a call that finds no connection, or whose
connection breaks before the server answered, is retried by the channel itself
(RETRY_POLICY); every talkserve RPC is safe to repeat, since each writes its output to a
fixed key.
"""

from __future__ import annotations

import json

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_PING_INTERVAL_MS = 20_000
MAX_RECONNECT_BACKOFF_MS = 5_000

RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.2s",
    "maxBackoff": "3s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


def client_options(keepalive_ms: int = KEEPALIVE_TIME_MS, balanced: bool = False) -> list[tuple[str, object]]:
    """Channel arguments of a talkserve client (`balanced`: round-robin over every address)."""
    config = {"methodConfig": [{"name": [{}], "retryPolicy": RETRY_POLICY}]}
    options: list[tuple[str, object]] = [("grpc.lb_policy_name", "round_robin")] if balanced else []
    return options + [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # 0: keep pinging an idle connection for as long as it is open.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
    ]


def server_options(min_ping_interval_ms: int = MIN_PING_INTERVAL_MS) -> list[tuple[str, object]]:
    """Server arguments that accept the clients' keepalive pings (see the module docstring)."""
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min_ping_interval_ms),
        ("grpc.http2.max_ping_strikes", 2),
        # The server pings idle clients too, so a connection whose client vanished is closed.
        ("grpc.keepalive_time_ms", 2 * KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]
