"""The Live RPC over a real socket: a session's frames follow the speech sent, capacity, idle
timeout, cancel, bad requests."""

from __future__ import annotations

import time

import cv2
import grpc
import numpy as np
import pytest
from PIL import Image
from skimage import data

from libs.grpcutil.errors import error_code_of
from libs.grpcutil.live_client import LiveCall, open_request, pcm16
from libs.speech.espeak import synthesize
from libs.store.client import ObjectStore
from libs.talkface import analysis
from libs.talkface.face import FaceAnalyzer
from libs.talkface.live import i420_to_rgb
from services.echomimic.server import EchoMimicSettings, create_echomimic_server
from talkserve.live.v1 import live_pb2
from talkserve.worker.v1 import worker_pb2, worker_pb2_grpc
from tests.live.person_video import write_person_video
from tests.servers import fresh_bucket

SIZE = 256
FPS = 25


@pytest.fixture(scope="module")
def store(seaweed, tmp_path_factory, lips_together_portrait):
    with fresh_bucket(seaweed.settings) as settings:
        store = ObjectStore(settings)
        folder = tmp_path_factory.mktemp("live")
        Image.fromarray(data.coffee()).save(folder / "coffee.png")
        store.put_file("inputs/coffee.png", str(folder / "coffee.png"))
        # a real photo with the lips together, so FaceMesh follows the mouth as it opens
        store.put_file("inputs/face.png", lips_together_portrait)
        yield store


@pytest.fixture(scope="module")
def replica(store):
    rep = create_echomimic_server(EchoMimicSettings(port=0, slots=1, live_slots=1, live_idle_timeout_s=5), store)
    assert rep.ready.wait(120)
    yield rep
    rep.server.stop(0)


@pytest.fixture
def channel(replica):
    with grpc.insecure_channel(f"127.0.0.1:{replica.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def speech():
    s = synthesize("We made a map of the bay, and the moon rose over the water.", voice="en")
    x = s.samples.astype(np.float32) / 32768.0
    # espeak speaks at 22050 Hz: to the 16 kHz the RPC takes
    n = int(round(x.size * 16000 / s.sample_rate))
    return np.interp(np.arange(n) * s.sample_rate / 16000, np.arange(x.size), x).astype(np.float32)


def _capacity(channel) -> worker_pb2.GetCapacityResponse:
    return worker_pb2_grpc.WorkerServiceStub(channel).GetCapacity(worker_pb2.GetCapacityRequest())


def _wait_free(channel, free: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while _capacity(channel).live_slots_free != free:
        assert time.monotonic() < deadline, f"live slots free did not become {free}"
        time.sleep(0.05)


def test_frames_follow_the_speech_sent_and_are_stamped_on_the_audio_clock(channel, speech):
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE, fps=FPS), timeout=120)
    silence = np.zeros(8000, np.float32)
    audio = np.concatenate([silence, speech, silence])
    for k in range(0, audio.size, 640):  # 40 ms chunks, as fast as they go
        call.send(pcm16(audio[k:k + 640]))
    call.close()
    replies = list(call)
    started = replies[0].started
    assert (started.width, started.height, started.fps, started.engine) == (SIZE, SIZE, FPS, "talkface-1")
    frames = [r.frame for r in replies[1:]]
    assert [f.index for f in frames] == list(range(len(frames)))  # none dropped, none twice
    assert abs(len(frames) - audio.size / 16000 * FPS) <= 3
    assert all(abs(f.pts_seconds - f.index / FPS) < 1e-9 for f in frames)
    # what a viewer sees: the mouth measured on the frames opens with the loudness of the audio sent
    face = FaceAnalyzer()
    opening = [analysis.measure_face(face.landmarks(i420_to_rgb(f.data, SIZE, SIZE))).opening for f in frames]
    loudness = analysis.audio_loudness(audio, FPS, len(frames))
    best = analysis.best_lagged_correlation(opening, loudness, max_lag=3)
    assert best.r >= 0.6, best
    assert abs(best.lag) <= 1, best  # within a frame of the audio clock
    assert max(opening[:10]) < np.nanmedian(opening) + 0.02  # the silent start stays closed


def test_a_session_holds_a_live_slot_until_it_ends_and_a_second_is_refused(channel):
    assert _capacity(channel).live_slots_total == 1
    _wait_free(channel, 1)
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE), timeout=60)
    replies = iter(call)
    assert next(replies).WhichOneof("event") == "started"
    assert _capacity(channel).live_slots_free == 0
    second = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE), timeout=60)
    with pytest.raises(grpc.RpcError) as err:
        list(second)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code_of(err.value) == "no_free_slot"
    call.close()
    list(replies)
    _wait_free(channel, 1)


def test_an_idle_session_keeps_the_face_alive_then_ends_after_its_idle_timeout(channel):
    started_at = time.monotonic()
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE, fps=FPS, idle_timeout_s=2),
                    timeout=30)
    replies = list(call)  # no audio at all, the client's side left open: the replica ends it
    took = time.monotonic() - started_at
    frames = [r.frame for r in replies if r.WhichOneof("event") == "frame"]
    assert 2.0 <= took < 10.0
    # frames went on in the silence (blinks, breathing, head motion): about real time
    assert len(frames) >= 1.0 * FPS
    pictures = [i420_to_rgb(f.data, SIZE, SIZE).astype(np.int16) for f in frames]
    assert max(np.abs(p - pictures[0]).mean() for p in pictures) > 0.2, "the idle face never moved"
    _wait_free(channel, 1)


def test_cancel_ends_the_session_and_frees_the_slot(channel, speech):
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE), timeout=60)
    replies = iter(call)
    next(replies)
    call.send(pcm16(speech[:16000]))
    assert next(replies).WhichOneof("event") == "frame"
    call.cancel()
    _wait_free(channel, 1, within=3.0)


def test_jpeg_frames_decode(channel, speech):
    call = LiveCall(channel, open_request("inputs/face.png", width=320, height=240, jpeg=True), timeout=60)
    call.send(pcm16(speech[:8000]))
    call.close()
    replies = list(call)
    assert replies[0].started.frame_format == live_pb2.FRAME_FORMAT_JPEG
    img = cv2.imdecode(np.frombuffer(replies[1].frame.data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 320, 3)


@pytest.mark.parametrize(("opening", "status", "code"), [
    (lambda: live_pb2.LiveRequest(audio=live_pb2.LiveAudio(pcm16=b"\0\0")), grpc.StatusCode.INVALID_ARGUMENT,
     "invalid_request"),
    (lambda: open_request("inputs/face.png", emotion="bored"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
    (lambda: open_request("inputs/coffee.png"), grpc.StatusCode.INVALID_ARGUMENT, "no_face"),
])
def test_bad_sessions_are_refused_with_a_clear_code_and_free_the_slot(channel, opening, status, code):
    call = LiveCall(channel, opening(), timeout=60)
    call.close()
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == status, err.value.details()
    assert error_code_of(err.value) == code
    _wait_free(channel, 1)


def test_odd_sized_audio_is_refused(channel):
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE), timeout=60)
    call.send(b"\0\0\0")
    call.close()
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert error_code_of(err.value) == "bad_audio"
    _wait_free(channel, 1)


def test_a_person_models_video_gives_the_face(channel, store, lips_together_portrait, tmp_path, speech):
    write_person_video(lips_together_portrait, str(tmp_path / "base.mp4"))
    store.put_file("people/p1/base.mp4", str(tmp_path / "base.mp4"))

    call = LiveCall(channel, open_request(person_model="people/p1", width=SIZE, height=SIZE), timeout=60)
    call.send(pcm16(speech[:8000]))
    call.close()
    replies = list(call)
    assert replies[0].started.width == SIZE and len(replies) > 10
    FaceAnalyzer().landmarks(i420_to_rgb(replies[-1].frame.data, SIZE, SIZE))  # the person's face is there

    missing = LiveCall(channel, open_request(person_model="people/nobody"), timeout=60)
    missing.close()
    with pytest.raises(grpc.RpcError) as err:
        list(missing)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no person model" in err.value.details()
    _wait_free(channel, 1)


def test_a_client_that_keeps_the_clock_gets_no_silence_of_the_replicas(channel, speech):
    call = LiveCall(channel, open_request("inputs/face.png", width=SIZE, height=SIZE, fps=FPS, client_clock=True),
                    timeout=60)
    replies = iter(call)
    next(replies)
    time.sleep(1.0)  # a stall of the client's: the replica fills nothing in
    call.send(pcm16(speech[:16000]))
    call.close()
    frames = [r.frame for r in replies]
    # only the second of audio sent (and its look-ahead filled at the end) became frames
    assert abs(len(frames) - FPS) <= 3 and frames[0].index == 0
