"""The voice service over gRPC: TTS recognised back by the ASR, voice profiles, Mandarin, bad requests."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from scipy.signal import butter, lfilter

from libs.speech import profile as voice_profile
from libs.speech import whisper_asr
from libs.speech.espeak import synthesize, write_wav
from libs.speech.wer import corpus_word_error_rate, normalize
from libs.store.client import ObjectStore
from libs.talkface.audio import load_audio as _samples
from services.voice.server import VoiceSettings, create_voice_server
from talkserve.common.v1 import common_pb2
from talkserve.voice.v1 import voice_pb2, voice_pb2_grpc
from tests import servers
from tests.echofu.recordings import CONTAINERS, DECODED_AS, decoded_as, record

# Ten everyday sentences, none of them used when the English voice and the decoder were chosen.
SENTENCES = [
    "Please close the door when you leave.", "I will call you tomorrow morning.", "The coffee shop opens at eight.",
    "We watched a movie last night.", "She is learning to play the piano.", "How much does this jacket cost?",
    "The bus was late again today.", "My favorite color is green.", "They are building a new bridge over the river.",
    "Can you tell me the way to the station?",
]


@pytest.fixture(scope="module")
def voice(seaweed):
    """(VoiceService stub, store) of one voice replica on port 0."""
    with servers.fresh_bucket(seaweed.settings) as bucket:
        store = ObjectStore(bucket)
        replica = create_voice_server(VoiceSettings(port=0, replica_id="voice-test"), store)
        assert replica.ready.wait(120)
        channel = grpc.insecure_channel(f"127.0.0.1:{replica.port}")
        try:
            yield voice_pb2_grpc.VoiceServiceStub(channel), store
        finally:
            channel.close()
            replica.server.stop(0)


def _ref(key):
    return common_pb2.ObjectRef(key=key)


def test_tts_is_recognised_back_by_the_asr(voice):
    stub, _ = voice
    pairs = []
    for i, text in enumerate(SENTENCES):
        spoken = stub.Synthesize(voice_pb2.SynthesizeRequest(text=text, language=voice_pb2.LANGUAGE_ENGLISH,
                                                             output=_ref(f"wer/{i}.wav")), timeout=60)
        assert spoken.engine == "espeak-ng-profile-1" and spoken.duration_seconds > 0.8
        heard = stub.Recognize(voice_pb2.RecognizeRequest(audio=_ref(f"wer/{i}.wav")), timeout=60)
        assert heard.engine == whisper_asr.ENGINE_NAME
        assert normalize(" ".join(w.text for w in heard.words)) == normalize(heard.text)
        assert all(0 <= w.start_seconds < w.end_seconds <= heard.duration_seconds + 0.05 for w in heard.words)
        pairs.append((text, heard.text))
    wer = corpus_word_error_rate(pairs)
    print(f"\nword error rate over {len(SENTENCES)} sentences: {wer:.3f}\n"
          + "\n".join(f"{t!r} -> {h!r}" for t, h in pairs))
    # Measured: 0.06 (4 of 67 words); PocketSphinx, the fallback, 0.25 on the same speech.
    assert wer < 0.15


@pytest.mark.parametrize("container", CONTAINERS)
def test_recognize_reads_any_container_named_input_wav(voice, container, tmp_path):
    stub, store = voice
    recording = record(tmp_path / "input.wav", container)
    assert decoded_as(recording) == DECODED_AS[container]  # the test made what it says, under a .wav name
    store.put_file(f"chat/{container}/input.wav", str(recording))
    heard = stub.Recognize(voice_pb2.RecognizeRequest(audio=_ref(f"chat/{container}/input.wav")), timeout=60)
    assert normalize(heard.text) == "hello there this is test forty seven".split(), heard.text
    assert 1.5 < heard.duration_seconds < 3.5


def test_profile_moves_synthesis_towards_the_reference(voice, tmp_path):
    stub, store = voice
    # A slow, low, dark reference: espeak-ng at another voice and pitch, low-passed.
    speech = synthesize("When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
                        "The rainbow is a division of white light into many beautiful colors.",
                        voice="en-us+m3", pitch=30, rate_wpm=120)
    b, a = butter(2, 1500 / (speech.sample_rate / 2))
    speech.samples = lfilter(b, a, speech.samples.astype(float)).astype(np.int16)
    write_wav(speech, tmp_path / "ref.wav")
    store.put_file("profile/ref.wav", str(tmp_path / "ref.wav"))
    ref = stub.ExtractProfile(voice_pb2.ExtractProfileRequest(audio=_ref("profile/ref.wav")), timeout=60).profile
    assert len(ref.envelope_db) == len(ref.envelope_hz) == len(voice_profile.ENVELOPE_HZ)

    text = "I would like to tell you a short story about my summer holiday by the sea."
    measured = {}
    for name, prof in (("default", None), ("matched", ref)):
        req = voice_pb2.SynthesizeRequest(text=text, output=_ref(f"profile/{name}.wav"))
        if prof is not None:
            req.profile.CopyFrom(prof)
        reply = stub.Synthesize(req, timeout=60)
        store.get_file(f"profile/{name}.wav", tmp_path / f"{name}.wav")
        measured[name] = voice_profile.extract_profile(_samples(tmp_path / f"{name}.wav"), 16000)
        if prof is not None:
            assert reply.settings.rate_wpm < 175 and len(reply.settings.eq_db) == len(voice_profile.ENVELOPE_HZ)

    def env_distance(p):
        return float(np.sqrt(np.mean((np.array(p.envelope_db) - np.array(ref.envelope_db)) ** 2)))

    d, m = measured["default"], measured["matched"]
    assert abs(m.f0_median_hz - ref.f0_median_hz) < abs(d.f0_median_hz - ref.f0_median_hz)
    assert abs(m.f0_median_hz - ref.f0_median_hz) / ref.f0_median_hz < 0.2
    assert abs(m.syllables_per_second - ref.syllables_per_second) < abs(d.syllables_per_second - ref.syllables_per_second)
    assert env_distance(m) < 0.6 * env_distance(d)


def test_mandarin_and_pitch_shift(voice, tmp_path):
    stub, store = voice
    reply = stub.Synthesize(voice_pb2.SynthesizeRequest(text="你好，今天天气很好。", output=_ref("zh.wav")), timeout=60)
    assert reply.settings.voice == "cmn" and reply.duration_seconds > 1.0
    up = stub.Synthesize(voice_pb2.SynthesizeRequest(text="Good morning to you all.", pitch_semitones=7,
                                                     output=_ref("up.wav")), timeout=60)
    base = stub.Synthesize(voice_pb2.SynthesizeRequest(text="Good morning to you all.", output=_ref("base.wav")),
                           timeout=60)
    f0 = {}
    for name in ("up", "base"):
        store.get_file(f"{name}.wav", tmp_path / f"{name}.wav")
        f0[name] = voice_profile.extract_profile(_samples(tmp_path / f"{name}.wav"), 16000).f0_median_hz
    assert up.settings.pitch > base.settings.pitch
    assert 1.25 < f0["up"] / f0["base"] < 1.8  # seven semitones is a factor of 1.5


@pytest.mark.parametrize("request_, code", [
    (voice_pb2.SynthesizeRequest(text="", output=common_pb2.ObjectRef(key="x.wav")), grpc.StatusCode.INVALID_ARGUMENT),
    (voice_pb2.SynthesizeRequest(text="hi", pitch_semitones=30, output=common_pb2.ObjectRef(key="x.wav")),
     grpc.StatusCode.INVALID_ARGUMENT),
    (voice_pb2.SynthesizeRequest(text="hi", profile=voice_pb2.VoiceProfile(f0_median_hz=5),
                                 output=common_pb2.ObjectRef(key="x.wav")), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_bad_synthesis_requests(voice, request_, code):
    stub, _ = voice
    with pytest.raises(grpc.RpcError) as err:
        stub.Synthesize(request_, timeout=30)
    assert err.value.code() == code


def test_missing_audio_and_silence(voice, tmp_path):
    stub, store = voice
    with pytest.raises(grpc.RpcError) as err:
        stub.Recognize(voice_pb2.RecognizeRequest(audio=_ref("nothing/here.wav")), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    silent = synthesize("x")
    silent.samples = np.zeros(22050, np.int16)
    write_wav(silent, tmp_path / "silence.wav")
    store.put_file("silence.wav", str(tmp_path / "silence.wav"))
    with pytest.raises(grpc.RpcError) as err:
        stub.ExtractProfile(voice_pb2.ExtractProfileRequest(audio=_ref("silence.wav")), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "voiced speech" in err.value.details()
    heard = stub.Recognize(voice_pb2.RecognizeRequest(audio=_ref("silence.wav")), timeout=30)
    assert heard.text == ""
