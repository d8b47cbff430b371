"""gRPC channels and stubs from the gateway to the media service and the model-service replicas."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talkserve.dicetalk.v1 import dicetalk_pb2_grpc
from talkserve.echomimic.v1 import echomimic_pb2_grpc
from talkserve.latentsync.v1 import latentsync_pb2_grpc
from talkserve.media.v1 import media_pb2_grpc
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

_STUBS = {
    "dicetalk": dicetalk_pb2_grpc.DiceTalkServiceStub,
    "echomimic": echomimic_pb2_grpc.EchoMimicServiceStub,
    "latentsync": latentsync_pb2_grpc.LatentSyncServiceStub,
}

_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 1),
]


@dataclass
class Replica:
    """One model-service replica: its address, its stubs and what it last reported."""

    kind: str
    target: str
    channel: grpc.Channel
    model: object
    worker: worker_pb2_grpc.WorkerServiceStub
    health: health_pb2_grpc.HealthStub

    def capacity(self, timeout: float = 2.0) -> worker_pb2.GetCapacityResponse | None:
        """The replica's free slots, or None when it does not answer."""
        try:
            return self.worker.GetCapacity(worker_pb2.GetCapacityRequest(), timeout=timeout)
        except grpc.RpcError:
            return None

    def serving(self, timeout: float = 2.0) -> bool:
        try:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


class Clients:
    """Every stub the gateway uses, built once at start."""

    def __init__(self, media_target: str, replicas: dict[str, list[str]]):
        self._channels: list[grpc.Channel] = []
        self.media = media_pb2_grpc.MediaServiceStub(self._channel(media_target))
        self.media_health = health_pb2_grpc.HealthStub(self._channel(media_target))
        self.replicas: dict[str, list[Replica]] = {}
        for kind, targets in replicas.items():
            self.replicas[kind] = []
            for target in targets:
                channel = self._channel(target)
                self.replicas[kind].append(Replica(
                    kind=kind, target=target, channel=channel, model=_STUBS[kind](channel),
                    worker=worker_pb2_grpc.WorkerServiceStub(channel),
                    health=health_pb2_grpc.HealthStub(channel),
                ))

    def media_serving(self, timeout: float = 2.0) -> bool:
        try:
            reply = self.media_health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _channel(self, target: str) -> grpc.Channel:
        channel = grpc.insecure_channel(target, options=_OPTIONS)
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
