"""Start an echomimic model-service replica."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from libs.engines.protocol import PORTRAIT
from libs.grpcutil.model_service import ModelServiceSettings, start_model_service
from libs.store.client import ObjectStore
from services.echomimic.servicer import EchoMimicServicer
from talkserve.echomimic.v1 import echomimic_pb2, echomimic_pb2_grpc


class EchoMimicSettings(ModelServiceSettings):
    """Env: TALKSERVE_ECHOMIMIC_PORT, _HOST, _SLOTS, ..."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_ECHOMIMIC_", extra="ignore")
    port: int = 50062


def create_echomimic_server(settings: EchoMimicSettings, store: ObjectStore, engine_factory=None):
    """Serve EchoMimicService and WorkerService; returns the started ModelReplica."""

    def register(server, slots, engines, staging):
        echomimic_pb2_grpc.add_EchoMimicServiceServicer_to_server(EchoMimicServicer(slots, engines, staging), server)
        return [echomimic_pb2.DESCRIPTOR.services_by_name["EchoMimicService"].full_name]

    return start_model_service(settings, store, register, PORTRAIT, engine_factory)
