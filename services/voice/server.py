"""Start a voice model-service replica: VoiceService, PersonService and WorkerService on one port."""

from __future__ import annotations

import logging

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.engines.protocol import PERSON
from libs.grpcutil.model_service import ModelServiceSettings, start_model_service
from libs.speech import asr
from libs.store.client import ObjectStore
from services.voice.servicer import PersonServicer, VoiceServicer
from talkserve.voice.v1 import voice_pb2, voice_pb2_grpc

log = logging.getLogger(__name__)


class VoiceSettings(ModelServiceSettings):
    """Env: TALKSERVE_VOICE_PORT, _HOST, _SLOTS, _MAX_TRAIN_SECONDS, _ASR_ENGINE, ..."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_VOICE_", extra="ignore")
    port: int = 50064
    max_train_seconds: float = Field(300.0, gt=0, description="most seconds of a training video that are read")
    base_seconds: float = Field(8.0, gt=0, description="seconds of the training video kept as the background clip")
    max_atlas_entries: int = Field(1000, ge=10, description="most mouth appearances in a person model")
    max_text_chars: int = Field(2000, ge=1, description="longest text Synthesize accepts")
    asr_engine: asr.Engine = Field("auto", description="speech recogniser: auto (Whisper where installed, "
                                                       "else PocketSphinx), whisper or pocketsphinx")


def create_voice_server(settings: VoiceSettings, store: ObjectStore, engine_factory=None):
    """Serve VoiceService, PersonService and WorkerService; returns the started ModelReplica.

    Slots count person-model jobs (training, generation); speech calls are short and
    run beside them without a slot.
    """

    # Chosen now, so that a replica told to use a recogniser it lacks fails at start, not at its first chat.
    log.info("speech recogniser: %s", asr.engine_name(settings.asr_engine, settings.models_dir))

    def register(server, slots, engines, staging):
        voice = VoiceServicer(staging, settings.max_text_chars, settings.asr_engine, settings.models_dir)
        voice_pb2_grpc.add_VoiceServiceServicer_to_server(voice, server)
        voice_pb2_grpc.add_PersonServiceServicer_to_server(PersonServicer(slots, engines, staging, settings), server)
        return [voice_pb2.DESCRIPTOR.services_by_name[name].full_name for name in ("VoiceService", "PersonService")]

    return start_model_service(settings, store, register, PERSON, engine_factory)
