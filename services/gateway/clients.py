"""gRPC channels from the gateway to the media service and the model-service replicas.

A model-service target is either `host:port` (one replica) or `dns:///name:port`: a headless
Kubernetes Service, resolved again and again to one replica per pod address, because the
dispatcher counts free slots per replica and so must talk to each pod on its own channel.
The typed clients of each service (services.gateway.rpc) are made on these channels.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from libs.grpcutil.connection import client_options
from libs.grpcutil.requestid import channel_with_request_id
from services.gateway.rpc import MediaClient, WorkerClient
from talkserve.worker.v1 import worker_pb2

log = logging.getLogger(__name__)

C = TypeVar("C")


@dataclass
class Replica:
    """One model-service replica: its address, its channel and the typed clients made on it."""

    kind: str  # the model service it belongs to
    target: str
    channel: grpc.Channel
    worker: WorkerClient
    _clients: dict[Callable[[grpc.Channel], Any], Any] = field(default_factory=dict, repr=False)

    def client(self, make: Callable[[grpc.Channel], C]) -> C:
        """The replica's client of one service (DiceTalkClient, VoiceClient, ...), made once."""
        made = self._clients.get(make)
        if made is None:
            made = self._clients[make] = make(self.channel)
        return made

    def capacity(self, timeout: float = 2.0) -> worker_pb2.GetCapacityResponse | None:
        """The replica's free slots, or None when it does not answer."""
        return self.worker.capacity(timeout)

    def serving(self, timeout: float = 2.0) -> bool:
        return self.worker.serving(timeout)


def resolve(target: str) -> list[str]:
    """`dns:///name:port` → one `ip:port` per address; anything else stays as it is."""
    if not target.startswith("dns:///"):
        return [target]
    host, _, port = target[len("dns:///"):].rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    addresses = sorted({str(info[4][0]) for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


class Clients:
    """The media client and every model-service replica; replicas are re-resolved by `refresh()`."""

    def __init__(self, media_target: str, replicas: dict[str, list[str]]):
        self._channels: list[grpc.Channel] = []
        # Media calls are stateless: one channel balanced over every media pod.
        self.media = MediaClient(self._channel(media_target, balanced=True))
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
        return Replica(kind=kind, target=target, channel=channel, worker=WorkerClient(channel))

    def _channel(self, target: str, balanced: bool = False) -> grpc.Channel:
        channel = grpc.insecure_channel(target, options=client_options(balanced=balanced))
        self._channels.append(channel)
        # Every call carries the id of the HTTP request it serves, for the services' log lines.
        return channel_with_request_id(channel)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
