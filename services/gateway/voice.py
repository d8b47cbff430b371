"""EchOfU's speech calls made while a client waits: on the next voice replica that answers.

Voice replicas are tried in turn (round robin): one that is down or failing hands the call
to the next; an input the service refuses is the client's 400 at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from services.gateway.context import Gateway
from services.gateway.echofu_http import fail
from services.gateway.errors import ApiError
from services.gateway.faults import http_status
from services.gateway.kinds.person import VOICE_SERVICE
from services.gateway.rpc import VoiceClient
from talkserve.voice.v1 import voice_pb2

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_round_robin = itertools.count()


def call(gw: Gateway, rpc: Callable[[VoiceClient, Req, float], Resp], request: Req, timeout: float = 120.0) -> Resp:
    """`rpc(client, request, timeout)` (say VoiceClient.synthesize) on the next voice replica that answers."""
    replicas = gw.clients.replicas.get(VOICE_SERVICE) or []
    if not replicas:
        raise fail(503, "没有配置语音服务 (TALKSERVE_GATEWAY_VOICE_TARGETS)")
    start = next(_round_robin)
    last: Any = None
    for i in range(len(replicas)):
        replica = replicas[(start + i) % len(replicas)]
        try:
            return rpc(replica.client(VoiceClient), request, timeout)
        except grpc.RpcError as err:
            if http_status(err) == 400:
                raise fail(400, err.details() or err.code().name) from err
            last = err
    raise ApiError(503, {"status": "error", "message": f"语音服务暂不可用: {last.code().name if last else 'unknown'}"},
                   {"Retry-After": "10"})


def profile_dict(msg: voice_pb2.VoiceProfile) -> dict[str, Any]:
    """A voice profile as JSON: its fields, lists as lists."""
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        out[f.name] = value if isinstance(value, (int, float, str, bool)) else list(value)
    return out
