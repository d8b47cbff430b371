"""Start talkserve's servers inside the test process, on port 0, against a real store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import grpc
import uvicorn

from libs.store.client import ObjectStore
from libs.store.settings import StoreSettings
from services.dicetalk.server import DiceTalkSettings, create_dicetalk_server
from services.echomimic.server import EchoMimicSettings, create_echomimic_server
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.latentsync.server import LatentSyncSettings, create_latentsync_server
from services.voice.server import VoiceSettings, create_voice_server
from services.media.server import MediaSettings, create_media_server
from talkserve.dicetalk.v1 import dicetalk_pb2_grpc
from talkserve.worker.v1 import worker_pb2_grpc


@contextlib.contextmanager
def fresh_bucket(base: StoreSettings) -> Iterator[StoreSettings]:
    """Settings for a bucket of its own, removed afterwards (SeaweedFS has few volume slots)."""
    settings = base.model_copy(update={"bucket": f"t-{uuid.uuid4().hex[:12]}"})
    store = ObjectStore(settings)
    store.ensure_bucket()
    try:
        yield settings
    finally:
        try:
            store.delete_bucket()
        except Exception:  # noqa: BLE001 - the store may be down after a fault-injection test
            pass


@contextlib.contextmanager
def dicetalk_stubs(port: int) -> Iterator[tuple]:
    """(DiceTalkService, WorkerService) stubs on one channel to a dicetalk replica on 127.0.0.1."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield dicetalk_pb2_grpc.DiceTalkServiceStub(channel), worker_pb2_grpc.WorkerServiceStub(channel)


@dataclass
class Backend:
    """The media service and one replica of each model service."""

    store_settings: StoreSettings
    media_target: str
    targets: dict[str, list[str]]
    replicas: list


@contextlib.contextmanager
def backend(store_settings: StoreSettings, replicas: int = 1, slots: int | None = None,
            **media_settings) -> Iterator[Backend]:
    store = ObjectStore(store_settings)
    media = create_media_server(MediaSettings(port=0, **media_settings), store)
    started = []
    targets: dict[str, list[str]] = {}
    for kind, settings_cls, create in (("dicetalk", DiceTalkSettings, create_dicetalk_server),
                                       ("echomimic", EchoMimicSettings, create_echomimic_server),
                                       ("latentsync", LatentSyncSettings, create_latentsync_server),
                                       ("voice", VoiceSettings, create_voice_server)):
        for i in range(replicas):
            extra = {"slots": slots} if slots else {}
            replica = create(settings_cls(port=0, replica_id=f"{kind}-{i}", **extra), store)
            started.append(replica)
            targets.setdefault(kind, []).append(f"127.0.0.1:{replica.port}")
    try:
        for replica in started:
            assert replica.ready.wait(120), "a model service did not load its engine"
        yield Backend(store_settings, f"127.0.0.1:{media.port}", targets, started)
    finally:
        for replica in started:
            replica.server.stop(0)
        media.stop(0)


@contextlib.contextmanager
def gateway_app(back: Backend, **overrides) -> Iterator[tuple[str, object]]:
    """Serve the gateway app with uvicorn in a thread; yields (base URL, the FastAPI app)."""
    settings = GatewaySettings(**{
        "ports": [0], "media_target": back.media_target,
        "dicetalk_targets": back.targets["dicetalk"], "echomimic_targets": back.targets["echomimic"],
        "latentsync_targets": back.targets["latentsync"], "voice_targets": back.targets["voice"],
        "gateway_id": f"gw-{uuid.uuid4().hex[:6]}", **overrides,
    })
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings, back.store_settings)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    # started: uvicorn listens; app.state.started: the gateway reached its store (startup.py)
    while not (server.started and getattr(app.state, "started", False)):
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def gateway(back: Backend, **overrides) -> Iterator[str]:
    """Serve the gateway app with uvicorn in a thread; yields its base URL."""
    with gateway_app(back, **overrides) as (url, _):
        yield url
