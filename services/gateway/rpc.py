"""Typed clients of the services the gateway calls: one method per RPC, requests and replies typed.

The gateway never picks an RPC by its name: a kind's runner calls, say,
`run.client(DiceTalkClient).synthesize(request, timeout)`. A streaming RPC returns a
`Stream`, which iterates over the events and can be cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talkserve.dicetalk.v1 import dicetalk_pb2, dicetalk_pb2_grpc
from talkserve.echomimic.v1 import echomimic_pb2, echomimic_pb2_grpc
from talkserve.latentsync.v1 import latentsync_pb2, latentsync_pb2_grpc
from talkserve.media.v1 import media_pb2, media_pb2_grpc
from talkserve.voice.v1 import voice_pb2, voice_pb2_grpc
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc

E = TypeVar("E", covariant=True)


class Stream(Protocol[E]):
    """A server-streaming call: its events in order; `cancel()` ends it from this side."""

    def __iter__(self) -> Iterator[E]: ...

    def cancel(self) -> bool: ...


def serving(health: health_pb2_grpc.HealthStub, timeout: float) -> bool:
    """Whether a server answers SERVING on grpc.health.v1."""
    try:
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)  # type: ignore[attr-defined]  # set in the stub's __init__
    except grpc.RpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


class MediaClient:
    """MediaService: fetching URLs, probing, audio, mux and concat."""

    def __init__(self, channel: grpc.Channel):
        self._stub = media_pb2_grpc.MediaServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def fetch_url(self, request: media_pb2.FetchUrlRequest, timeout: float) -> media_pb2.FetchUrlResponse:
        return cast(media_pb2.FetchUrlResponse, self._stub.FetchUrl(request, timeout=timeout))

    def probe(self, request: media_pb2.ProbeRequest, timeout: float,
              wait_for_ready: bool = False) -> media_pb2.ProbeResponse:
        return cast(media_pb2.ProbeResponse, self._stub.Probe(request, timeout=timeout, wait_for_ready=wait_for_ready))

    def normalize_audio(self, request: media_pb2.NormalizeAudioRequest, timeout: float,
                        wait_for_ready: bool = False) -> media_pb2.NormalizeAudioResponse:
        return cast(media_pb2.NormalizeAudioResponse,
                    self._stub.NormalizeAudio(request, timeout=timeout, wait_for_ready=wait_for_ready))

    def encode_audio(self, request: media_pb2.EncodeAudioRequest, timeout: float) -> grpc.Future:
        """Started at once; the future's result() is the EncodeAudioResponse."""
        return cast(grpc.Future, self._stub.EncodeAudio.future(request, timeout=timeout))

    def mux(self, request: media_pb2.MuxRequest, timeout: float) -> media_pb2.MuxResponse:
        return cast(media_pb2.MuxResponse, self._stub.Mux(request, timeout=timeout))

    def concat(self, request: media_pb2.ConcatRequest, timeout: float) -> media_pb2.ConcatResponse:
        return cast(media_pb2.ConcatResponse, self._stub.Concat(request, timeout=timeout))

    def serving(self, timeout: float = 2.0) -> bool:
        return serving(self._health, timeout)


class DiceTalkClient:
    """DiceTalkService: a portrait speaks with an emotion."""

    def __init__(self, channel: grpc.Channel):
        self._stub = dicetalk_pb2_grpc.DiceTalkServiceStub(channel)

    def synthesize(self, request: dicetalk_pb2.SynthesizeRequest,
                   timeout: float) -> Stream[dicetalk_pb2.SynthesizeResponse]:
        return cast(Stream[dicetalk_pb2.SynthesizeResponse], self._stub.Synthesize(request, timeout=timeout))


class EchoMimicClient:
    """EchoMimicService: a portrait speaks."""

    def __init__(self, channel: grpc.Channel):
        self._stub = echomimic_pb2_grpc.EchoMimicServiceStub(channel)

    def generate(self, request: echomimic_pb2.GenerateRequest, timeout: float) -> Stream[echomimic_pb2.GenerateResponse]:
        return cast(Stream[echomimic_pb2.GenerateResponse], self._stub.Generate(request, timeout=timeout))


class LatentSyncClient:
    """LatentSyncService: a video is re-dubbed."""

    def __init__(self, channel: grpc.Channel):
        self._stub = latentsync_pb2_grpc.LatentSyncServiceStub(channel)

    def sync(self, request: latentsync_pb2.SyncRequest, timeout: float) -> Stream[latentsync_pb2.SyncResponse]:
        return cast(Stream[latentsync_pb2.SyncResponse], self._stub.Sync(request, timeout=timeout))


class VoiceClient:
    """A voice replica's two services: VoiceService (speech) and PersonService (person models)."""

    def __init__(self, channel: grpc.Channel):
        self._voice = voice_pb2_grpc.VoiceServiceStub(channel)
        self._person = voice_pb2_grpc.PersonServiceStub(channel)

    def synthesize(self, request: voice_pb2.SynthesizeRequest, timeout: float) -> voice_pb2.SynthesizeResponse:
        return cast(voice_pb2.SynthesizeResponse, self._voice.Synthesize(request, timeout=timeout))

    def extract_profile(self, request: voice_pb2.ExtractProfileRequest,
                        timeout: float) -> voice_pb2.ExtractProfileResponse:
        return cast(voice_pb2.ExtractProfileResponse, self._voice.ExtractProfile(request, timeout=timeout))

    def recognize(self, request: voice_pb2.RecognizeRequest, timeout: float) -> voice_pb2.RecognizeResponse:
        return cast(voice_pb2.RecognizeResponse, self._voice.Recognize(request, timeout=timeout))

    def train_person_model(self, request: voice_pb2.TrainPersonModelRequest,
                           timeout: float) -> Stream[voice_pb2.TrainPersonModelResponse]:
        return cast(Stream[voice_pb2.TrainPersonModelResponse],
                    self._person.TrainPersonModel(request, timeout=timeout))

    def generate_person_video(self, request: voice_pb2.GeneratePersonVideoRequest,
                              timeout: float) -> Stream[voice_pb2.GeneratePersonVideoResponse]:
        return cast(Stream[voice_pb2.GeneratePersonVideoResponse],
                    self._person.GeneratePersonVideo(request, timeout=timeout))


class WorkerClient:
    """WorkerService and health of a model-service replica: its free slots, whether it serves."""

    def __init__(self, channel: grpc.Channel):
        self._stub = worker_pb2_grpc.WorkerServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def capacity(self, timeout: float) -> worker_pb2.GetCapacityResponse | None:
        """The replica's free slots, or None when it does not answer."""
        try:
            return cast(worker_pb2.GetCapacityResponse,
                        self._stub.GetCapacity(worker_pb2.GetCapacityRequest(), timeout=timeout))
        except grpc.RpcError:
            return None

    def serving(self, timeout: float) -> bool:
        return serving(self._health, timeout)
