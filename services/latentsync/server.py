"""Start a latentsync model-service replica."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from libs.engines.protocol import REDUB
from libs.grpcutil.model_service import ModelServiceSettings, start_model_service
from libs.store.client import ObjectStore
from services.latentsync.servicer import LatentSyncServicer
from talkserve.latentsync.v1 import latentsync_pb2, latentsync_pb2_grpc


class LatentSyncSettings(ModelServiceSettings):
    """Env: TALKSERVE_LATENTSYNC_PORT, _HOST, _SLOTS, _CHECKPOINTS (JSON list), ..."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_LATENTSYNC_", extra="ignore")
    port: int = 50063
    # LatentSync is documented as one job at a time per GPU.
    slots: int = 1
    # Checkpoint names clients may ask for; the documented default path is one of them.
    checkpoints: list[str] = ["checkpoints/unet.ckpt"]


def create_latentsync_server(settings: LatentSyncSettings, store: ObjectStore, engine_factory=None):
    """Serve LatentSyncService and WorkerService; returns the started ModelReplica."""

    def register(server, slots, engines, staging):
        servicer = LatentSyncServicer(slots, engines, staging, frozenset(settings.checkpoints))
        latentsync_pb2_grpc.add_LatentSyncServiceServicer_to_server(servicer, server)
        return [latentsync_pb2.DESCRIPTOR.services_by_name["LatentSyncService"].full_name]

    return start_model_service(settings, store, register, REDUB, engine_factory)
