"""Start a dicetalk model-service replica."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from libs.engines.protocol import PORTRAIT
from libs.grpcutil.model_service import ModelServiceSettings, start_model_service
from libs.store.client import ObjectStore
from services.dicetalk.servicer import DiceTalkServicer
from talkserve.dicetalk.v1 import dicetalk_pb2, dicetalk_pb2_grpc


class DiceTalkSettings(ModelServiceSettings):
    """Env: TALKSERVE_DICETALK_PORT, _HOST, _SLOTS, ..."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_DICETALK_", extra="ignore")
    port: int = 50061


def create_dicetalk_server(settings: DiceTalkSettings, store: ObjectStore, engine_factory=None):
    """Serve DiceTalkService and WorkerService; returns the started ModelReplica."""

    def register(server, slots, engines, staging):
        dicetalk_pb2_grpc.add_DiceTalkServiceServicer_to_server(DiceTalkServicer(slots, engines, staging), server)
        return [dicetalk_pb2.DESCRIPTOR.services_by_name["DiceTalkService"].full_name]

    return start_model_service(settings, store, register, PORTRAIT, engine_factory)
