"""The web page's Live section in a real browser: Chromium's fake microphone plays a speech WAV into
a live session, and the face that comes back over WebRTC is measured on the frames the page
received (drawn to a canvas in the page, FaceMesh on them here): its mouth follows the speech.
The stack is the browser tests' own (conftest.py): its echomimic and dicetalk replicas hold live
sessions by default. Chromium is launched here with a fake microphone (a launch flag), not shared.
"""

from __future__ import annotations

import base64
import wave

import cv2
import numpy as np
import pytest

from libs.speech.espeak import synthesize
from libs.talkface import analysis
from libs.talkface.face import FaceAnalyzer
from tests.browser.conftest import ARTIFACTS, CHROMIUM_ARGS

RATE = 48000
# Every frame the page's video element shows, drawn to a canvas and kept as a JPEG with its media time.
CAPTURE = """
window.__frames = [];
window.__capture = () => {
  const video = document.getElementById("live-video");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d");
  const grab = (now, meta) => {
    if (video.videoWidth) {
      canvas.width = video.videoWidth; canvas.height = video.videoHeight;
      ctx.drawImage(video, 0, 0);
      // the frame's own timestamp (the session's audio clock, from its RTP time), not when it was shown
      window.__frames.push([meta.mediaTime * 1000, canvas.toDataURL("image/jpeg", 0.92)]);
    }
    if (!window.__stopCapture) video.requestVideoFrameCallback(grab);
  };
  video.requestVideoFrameCallback(grab);
};
"""


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> tuple[str, np.ndarray]:
    """The fake microphone's WAV (Chromium loops it): a second of silence, speech, a second of silence."""
    s = synthesize("We made a map of the bay, and the moon rose over the water.", voice="en")
    x = s.samples.astype(np.float64)
    speech = np.interp(np.arange(int(x.size * RATE / s.sample_rate)) * s.sample_rate / RATE, np.arange(x.size), x)
    pcm = np.concatenate([np.zeros(RATE), speech, np.zeros(RATE)]).astype(np.int16)
    path = tmp_path_factory.mktemp("mic") / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return str(path), pcm


@pytest.fixture
def page(browser, chromium, microphone):
    """A page in a Chromium of its own, launched with the fake microphone (through the session's
    Playwright: a second one cannot run beside it)."""
    args = [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone[0]}", "--autoplay-policy=no-user-gesture-required"]
    chrome = browser.browser_type.launch(executable_path=chromium, headless=True, args=args)
    try:
        context = chrome.new_context(viewport={"width": 1000, "height": 1400})
        yield context.new_page()
        context.close()
    finally:
        chrome.close()


def _loudness(pcm: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """The loudness envelope (0..1, 40 dB range) of the looped WAV over the 40 ms before each time."""
    x = pcm.astype(np.float64) / 32768.0
    period = x.size
    win = RATE * 40 // 1000
    idx = (np.asarray(times_s) * RATE).astype(np.int64) % period
    rms = np.array([np.sqrt(np.mean(np.take(x, np.arange(i - win, i), mode="wrap") ** 2)) for i in idx])
    db = 20 * np.log10(rms + 1e-9)
    return np.clip((db - (np.percentile(db, 95) - 40)) / 40, 0, 1)


def test_the_live_face_follows_the_microphone(page, site, microphone, lips_together_portrait):
    _, pcm = microphone
    page.add_init_script(CAPTURE)
    page.goto(site)
    page.set_input_files("#live-image", lips_together_portrait)
    page.select_option("#live-size", "384")
    page.click("#live-mic")
    page.wait_for_function("() => { const v = document.getElementById('live-video');"
                           " return v.readyState >= 2 && v.videoWidth > 0; }", timeout=60_000)
    assert "talkface-1" in page.inner_text("#live-status")
    page.evaluate("window.__capture()")
    period_s = pcm.size / RATE
    page.wait_for_timeout(int(2.2 * period_s * 1000))  # the speech, looped, twice
    page.evaluate("window.__stopCapture = true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#live-section").screenshot(path=str(ARTIFACTS / "live-page.png"))
    frames = page.evaluate("window.__frames")
    page.click("#live-stop")
    assert page.inner_text("#live-status") == "Ended."

    assert len(frames) / (2.2 * period_s) > 15, f"only {len(frames)} frames arrived"
    face = FaceAnalyzer()
    times, opening = [], []
    for now_ms, url in frames:
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8),
                                        cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert rgb.shape[:2] == (384, 384)
        try:
            opening.append(analysis.measure_face(face.landmarks(rgb)).opening)
        except Exception:  # noqa: BLE001 - no face on a frame
            opening.append(np.nan)
        times.append(now_ms / 1000.0)
    opening_arr, times_arr = np.array(opening), np.array(times) - times[0]
    ok = ~np.isnan(opening_arr)
    assert ok.mean() > 0.9, "the face was lost on many frames"
    # When the looped WAV started is not known to the page, and Chromium's loop is not sample-exact:
    # each pass of the speech is aligned on its own (the best phase over one period).
    scores = []
    for lo in np.arange(0.0, times_arr[-1] - period_s + 0.5, period_s):
        part = ok & (times_arr >= lo) & (times_arr < lo + period_s)
        scores.append(max(float(np.corrcoef(opening_arr[part], _loudness(pcm, times_arr[part] + phase))[0, 1])
                          for phase in np.arange(0.0, period_s, 0.02)))
    assert len(scores) >= 2 and np.mean(scores) >= 0.6 and min(scores) >= 0.5, scores


def test_typed_text_is_spoken_by_the_face(page, site, lips_together_portrait):
    page.goto(site)
    page.set_input_files("#live-image", lips_together_portrait)
    page.select_option("#live-size", "256")
    page.click("#live-start")
    page.wait_for_function("() => document.getElementById('live-video').videoWidth > 0", timeout=60_000)
    page.fill("#live-text", "Good morning, and welcome to the show.")
    page.press("#live-text", "Enter")
    page.wait_for_function("() => document.getElementById('live-status').textContent.startsWith('Speaking (')",
                           timeout=30_000)
    assert page.is_disabled("#live-listen"), "no microphone: nothing to ask aloud"
    page.fill("#live-text", "What is on today?")
    page.click("#live-ask")
    # no chat model on this server: the page says so, and the session goes on
    page.wait_for_function("() => document.getElementById('live-status').textContent.includes('no chat model')",
                           timeout=30_000)
    page.click("#live-stop")
