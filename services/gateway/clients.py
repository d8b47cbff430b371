"""gRPC channels and stubs from the gateway to the media service and the model-service replicas.

A model-service target is either `host:port` (one replica) or `dns:///name:port`: a headless
Kubernetes Service, resolved again and again to one replica per pod address, because the
dispatcher counts free slots per replica and so must talk to each pod on its own channel.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.grpcutil.connection import client_options
from talkserve.dicetalk.v1 import dicetalk_pb2_grpc
from talkserve.echomimic.v1 import echomimic_pb2_grpc
from talkserve.latentsync.v1 import latentsync_pb2_grpc
from talkserve.media.v1 import media_pb2_grpc
from talkserve.voice.v1 import voice_pb2_grpc
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

class VoiceStubs:
    """Both services of a voice replica on one channel, looked up by RPC name."""

    def __init__(self, channel: grpc.Channel):
        self.person = voice_pb2_grpc.PersonServiceStub(channel)
        self.voice = voice_pb2_grpc.VoiceServiceStub(channel)

    def __getattr__(self, name: str):
        for stub in (self.__dict__.get("person"), self.__dict__.get("voice")):
            if stub is not None and hasattr(stub, name):
                return getattr(stub, name)
        raise AttributeError(name)


_STUBS = {
    "dicetalk": dicetalk_pb2_grpc.DiceTalkServiceStub,
    "echomimic": echomimic_pb2_grpc.EchoMimicServiceStub,
    "latentsync": latentsync_pb2_grpc.LatentSyncServiceStub,
    "voice": VoiceStubs,
}

log = logging.getLogger(__name__)


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


def resolve(target: str) -> list[str]:
    """`dns:///name:port` → one `ip:port` per address; anything else stays as it is."""
    if not target.startswith("dns:///"):
        return [target]
    host, _, port = target[len("dns:///"):].rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    addresses = sorted({info[4][0] for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


class Clients:
    """Every stub the gateway uses; model-service replicas are re-resolved by `refresh()`."""

    def __init__(self, media_target: str, replicas: dict[str, list[str]]):
        self._channels: list[grpc.Channel] = []
        # Media calls are stateless: one channel balanced over every media pod.
        media_channel = self._channel(media_target, balanced=True)
        self.media = media_pb2_grpc.MediaServiceStub(media_channel)
        self.media_health = health_pb2_grpc.HealthStub(media_channel)
        self._configured = replicas
        self._lock = threading.Lock()
        self.replicas: dict[str, list[Replica]] = {kind: [] for kind in replicas}
        self.refresh()

    def refresh(self) -> None:
        """Re-resolve DNS targets; keep channels of replicas that are still there, close the others."""
        for kind, targets in self._configured.items():
            wanted = [addr for target in targets for addr in resolve(target)]
            with self._lock:
                current = {r.target: r for r in self.replicas[kind]}
                fresh = [current.get(addr) or self._replica(kind, addr) for addr in wanted]
                gone = [r for t, r in current.items() if t not in wanted]
                self.replicas[kind] = fresh
            for replica in gone:
                log.info("%s replica %s is gone", kind, replica.target)
                replica.channel.close()

    def _replica(self, kind: str, target: str) -> Replica:
        channel = self._channel(target)
        return Replica(kind=kind, target=target, channel=channel, model=_STUBS[kind](channel),
                       worker=worker_pb2_grpc.WorkerServiceStub(channel), health=health_pb2_grpc.HealthStub(channel))

    def media_serving(self, timeout: float = 2.0) -> bool:
        try:
            reply = self.media_health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _channel(self, target: str, balanced: bool = False) -> grpc.Channel:
        channel = grpc.insecure_channel(target, options=client_options(balanced=balanced))
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
