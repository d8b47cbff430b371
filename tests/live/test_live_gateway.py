"""POST /v1/live end to end: an aiortc client in the test, a real gateway, real replicas over sockets.

The client's microphone is a WAV played in real time; what comes back is measured on the
received video (FaceMesh on its frames): the mouth follows the speech sent. Text sent on the
data channel is spoken by the voice service into the session. A replica that dies mid-session
is replaced within 2 s, with the video frozen meanwhile and the connection never failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import httpx
import numpy as np
import pytest

from libs.speech.espeak import synthesize
from libs.store.client import ObjectStore
from libs.talkface import analysis
from libs.talkface.face import FaceAnalyzer
from services.echomimic.server import EchoMimicSettings, create_echomimic_server
from services.live_client import LiveClient, LiveError
from services.voice.server import VoiceSettings, create_voice_server
from tests import servers
from tests.echofu.conftest import ChatServer
from tests.live.person_video import write_person_video

KEY = "live-test-key"
SIZE = 256


@pytest.fixture(scope="module")
def site(seaweed):
    with servers.fresh_bucket(seaweed.settings) as bucket:
        store = ObjectStore(bucket)
        replicas = [create_echomimic_server(EchoMimicSettings(port=0, replica_id=f"echomimic-{i}", live_slots=1),
                                            store) for i in range(2)]
        voice = create_voice_server(VoiceSettings(port=0, replica_id="voice-0"), store)
        for r in (*replicas, voice):
            assert r.ready.wait(120)
        back = servers.Backend(bucket, "127.0.0.1:1", {
            "echomimic": [f"127.0.0.1:{r.port}" for r in replicas], "dicetalk": [], "latentsync": [],
            "voice": [f"127.0.0.1:{voice.port}"]}, [*replicas, voice])
        chat = ChatServer()
        try:
            with servers.gateway(back, api_keys=[KEY], require_api_keys=True, llm_base_url=chat.url,
                                 llm_model="test-model") as url:
                yield url, replicas, store
        finally:
            chat.close()
            for r in (*replicas, voice):
                r.server.stop(0)


@pytest.fixture(scope="module")
def portrait(lips_together_portrait) -> bytes:
    with open(lips_together_portrait, "rb") as fh:
        return fh.read()


def _run(coro):
    """asyncio.run in a thread of its own: the browser tests' session-wide Playwright keeps an
    event loop running in the main thread, where asyncio.run refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _speech(text: str) -> np.ndarray:
    s = synthesize(text, voice="en")
    x = s.samples.astype(np.float64)
    n = int(round(x.size * 16000 / s.sample_rate))
    return np.interp(np.arange(n) * s.sample_rate / 16000, np.arange(x.size), x).astype(np.int16)


def _openings(frames, face) -> np.ndarray:
    out = []
    for _, rgb in frames:
        try:
            out.append(analysis.measure_face(face.landmarks(rgb)).opening)
        except Exception:  # noqa: BLE001 - no face on a frame
            out.append(np.nan)
    return np.array(out)


def _follows(client: LiveClient, audio: np.ndarray, face: FaceAnalyzer) -> tuple[float, float]:
    """(correlation, lag s): mouth opening on the received frames against the loudness of the audio
    sent, by arrival time, at the best end-to-end delay in 0..0.6 s."""
    rec = client.received
    times = np.array([t for t, _ in rec.frames]) - rec.audio_started_at
    opening = _openings(rec.frames, face)
    x = audio.astype(np.float64) / 32768.0
    best = (-1.0, 0.0)
    for lag in np.arange(0.0, 0.61, 0.02):
        idx = ((times - lag) * 16000).astype(int)
        loud = np.array([np.sqrt(np.mean(x[max(0, i - 640):max(0, i)] ** 2)) if 640 <= i <= x.size else 0.0
                         for i in idx])
        db = 20 * np.log10(loud + 1e-9)
        env = np.clip((db - (np.percentile(db, 95) - 40)) / 40, 0, 1)
        ok = ~np.isnan(opening)
        r = float(np.corrcoef(opening[ok], env[ok])[0, 1])
        if r > best[0]:
            best = (r, float(lag))
    return best


def test_the_face_follows_the_speech_sent_from_the_microphone(site, portrait):
    url, *_ = site
    silence = np.zeros(16000, np.int16)
    audio = np.concatenate([silence, _speech("We made a map of the bay, and the moon rose over the water."),
                            silence])

    async def run():
        client = LiveClient(url, KEY)
        session = await client.open(portrait, audio, width=SIZE, height=SIZE)
        await asyncio.sleep(audio.size / 16000 + 1.0)
        state = await client.state()
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{url}/metrics")).text
        await client.close()
        return client, session, state, metrics

    client, session, state, metrics = _run(run())
    assert session["engine"] == "talkface-1" and session["width"] == SIZE
    assert state["failovers"] == 0 and state["audio_seconds"] > audio.size / 16000
    assert 'talkserve_gateway_live_sessions{service="echomimic"} 1.0' in metrics
    frames = client.received.frames
    span = frames[-1][0] - frames[0][0]
    assert len(frames) / span > 20, "the video did not come at about 25 fps"
    assert frames[0][1].shape == (SIZE, SIZE, 3)
    assert client.received.audio_frames > 25 * (audio.size / 16000), "the sound did not come back"
    r, lag = _follows(client, audio, FaceAnalyzer())
    assert r >= 0.5, (r, lag)
    assert lag <= 0.4, f"the mouth came {lag:.2f} s after the sound"


def test_text_sent_into_a_session_is_spoken_and_moves_the_mouth(site, portrait):
    url, *_ = site

    async def run():
        client = LiveClient(url, KEY)
        await client.open(portrait, None, width=SIZE, height=SIZE)
        await asyncio.sleep(1.5)
        quiet = len(client.received.frames)
        client.say("Hello there, how are you today?")
        await asyncio.sleep(3.5)
        await client.close()
        return client, quiet

    client, quiet = _run(run())
    assert client.received.messages and client.received.messages[0]["event"] == "speaking", client.received.messages
    opening = _openings(client.received.frames, FaceAnalyzer())
    rest = np.nanpercentile(opening[:quiet], 90)
    assert np.nanmax(opening[quiet:]) > rest + 0.05, "the mouth did not open for the text"


def test_a_session_survives_its_replica_dying(site, portrait):
    url, replicas, _ = site
    audio = np.concatenate([_speech("One, two, three, four, five, six, seven, eight, nine, ten.")] * 2)

    async def run():
        client = LiveClient(url, KEY)
        session = await client.open(portrait, audio, width=SIZE, height=SIZE)
        await asyncio.sleep(1.5)
        holder = next(r for r in replicas if r.replica_id == session["replica"])
        killed_at = time.perf_counter()
        holder.server.stop(0)  # its RPCs end at once, as in a crash
        await asyncio.sleep(4.0)
        state = await client.state()
        pc_state = client.pc.connectionState
        await client.close()
        return client, session, state, killed_at, pc_state

    client, session, state, killed_at, pc_state = _run(run())
    assert state["failovers"] == 1 and state["replica"] != session["replica"]
    assert pc_state == "connected"
    times = np.array([t for t, _ in client.received.frames])
    after = times[times > killed_at]
    assert after.size > 40, "no video after the failover"
    gaps = np.diff(np.concatenate([[killed_at], after]))
    assert gaps.max() < 2.0, f"the video froze for {gaps.max():.2f} s"


def test_a_key_is_needed_and_a_bad_portrait_is_refused(site, portrait):
    url, *_ = site

    async def run(key, image):
        client = LiveClient(url, key)
        with pytest.raises(LiveError) as err:
            await client.open(image, None)
        return err.value

    assert _run(run(None, portrait)).status == 401
    refused = _run(run(KEY, b"not a picture"))
    assert refused.status == 400 and refused.body["error"]["code"] == "bad_image"


def test_the_cli_plays_a_wav_into_a_session_and_saves_the_face(site, lips_together_portrait, tmp_path):
    import os
    import subprocess
    import sys
    import wave

    import av

    from services.stack import ROOT

    url, *_ = site
    wav = tmp_path / "hello.wav"
    speech = _speech("Hello from the command line.")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(speech.tobytes())
    out = tmp_path / "live.mp4"

    def talkserve(*args):
        return subprocess.run([sys.executable, "-m", "services.cli", "live", "--url", url, *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TALKSERVE_API_KEY": KEY})

    done = talkserve("--image", lips_together_portrait, "--audio", str(wav), "--size", "256", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert "talkface-1" in done.stderr and "received" in done.stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (stream.width, stream.height) == (SIZE, SIZE)
    assert frames >= 0.8 * 25 * speech.size / 16000  # the speech's length and the second after it, at ~25 fps

    refused = talkserve("--image", str(wav), "--audio", str(wav), "-o", str(tmp_path / "no.mp4"))
    assert refused.returncode == 1 and "HTTP 400" in refused.stderr and "portrait" in refused.stderr


def test_a_person_model_of_the_callers_own_speaks(site, lips_together_portrait, tmp_path):
    from services.gateway.auth import key_id
    from services.gateway.echofu_store import Space

    url, _, store = site
    write_person_video(lips_together_portrait, str(tmp_path / "base.mp4"))
    prefix = Space.of(key_id(KEY)).model_prefix("person", "p1")
    store.put_file(prefix + "base.mp4", str(tmp_path / "base.mp4"))
    store.put_bytes(prefix + "model.json", b"{}")

    async def run(model):
        client = LiveClient(url, KEY)
        try:
            session = await client.open(None, _speech("Hello there."), width=SIZE, height=SIZE, person_model=model)
        except LiveError as exc:
            return exc
        await asyncio.sleep(1.5)
        await client.close()
        return client, session

    client, session = _run(run("models/person/p1"))
    assert session["engine"] == "talkface-1" and len(client.received.frames) > 10
    missing = _run(run("models/person/nobody"))
    assert missing.status == 404 and missing.body["error"]["code"] == "not_found"
    bad = _run(run("../etc/passwd"))
    assert bad.status == 422


def test_the_chat_answers_a_typed_and_a_spoken_question_with_the_face(site, portrait):
    url, *_ = site
    silence = np.zeros(16000, np.int16)
    question = _speech("Where is the train station?")
    audio = np.concatenate([silence, question, silence])

    async def run():
        client = LiveClient(url, KEY)
        await client.open(portrait, audio, width=SIZE, height=SIZE)
        await client.send({"listen": "start"})
        listening = await client.reply("listening")
        await asyncio.sleep(max(0.0, client.received.audio_started_at + audio.size / 16000 + 0.3
                                - time.perf_counter()))
        await client.send({"listen": "stop"})
        spoken = await client.reply("answer")
        await client.send({"ask": "What time is it?"})
        typed = await client.reply("answer")
        quiet = len(client.received.frames)
        await asyncio.sleep(2.5)
        await client.close()
        return client, listening, spoken, typed, quiet

    client, listening, spoken, typed, quiet = _run(run())
    assert listening["event"] == "listening"
    assert spoken["event"] == "answer", spoken
    assert "station" in spoken["question"].lower(), spoken
    assert spoken["answer"].startswith("You asked about") and spoken["seconds"] > 1
    assert typed["event"] == "answer" and typed["answer"] == "You asked about What time is it?. Walk two blocks north."
    opening = _openings(client.received.frames[quiet:], FaceAnalyzer())
    assert np.nanmax(opening) - np.nanmin(opening) > 0.05, "the face did not speak the answer"
