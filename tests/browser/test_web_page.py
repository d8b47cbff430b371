"""The web page in a real browser: Playwright drives Debian's Chromium headless against a real stack.

A person drops a portrait and speech, picks an emotion, watches the progress bar fill and plays
the result; a screenshot lands in out/test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import pathlib

import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from services.stack import ROOT

ARTIFACTS = ROOT / "out" / "test-artifacts"
# Records every text the status line shows, so the test can see the progress as it happened.
STATUS_LOG = """
window.__status = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("status-text");
  new MutationObserver(() => window.__status.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
});
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    folder = tmp_path_factory.mktemp("browser-inputs")
    Image.fromarray(data.astronaut()).save(folder / "portrait.png")
    write_wav(synthesize("Hello! This page made me talk. Now watch my lips follow every word.", voice="en"),
              folder / "speech.wav")
    (folder / "notes.png").write_bytes(b"this is text, not a picture\n" * 40)
    return folder / "portrait.png", folder / "speech.wav"


def test_portrait_and_speech_become_a_playable_video(page, site, inputs):
    portrait, speech = inputs
    page.add_init_script(STATUS_LOG)
    page.goto(site)
    assert page.title().startswith("talkserve")
    assert page.is_checked("#kind-emotion")
    assert page.is_hidden("#key-section"), "keys are off locally: no key box"

    page.set_input_files("#image-file", str(portrait))
    page.set_input_files("#audio-file", str(speech))
    assert "portrait.png" in page.inner_text("#image-chosen")
    page.select_option("#emotion", "surprised")
    page.select_option("#min-resolution", "512")
    page.click("#submit")

    page.wait_for_selector("#result-section:not([hidden])", timeout=120_000)
    assert page.eval_on_selector("#progress", "p => p.value") == 1
    statuses = page.evaluate("window.__status")
    assert any("Rendering frame" in s for s in statuses), statuses
    percents = [int(s.split(" %")[0]) for s in statuses if " % —" in s]
    assert percents == sorted(percents) and percents[-1] == 100, statuses
    assert page.is_hidden("#error")

    # The video loads, has a length, and plays.
    page.wait_for_function("() => { const v = document.getElementById('result-video');"
                           " return v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0; }", timeout=30_000)
    page.evaluate("() => { const v = document.getElementById('result-video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.getElementById('result-video').currentTime > 0.3", timeout=15_000)
    width = page.eval_on_selector("#result-video", "v => v.videoWidth")
    assert width >= 512
    assert "response-content-disposition=attachment" in page.get_attribute("#download", "href")
    assert "talkface-1" in page.inner_text("#engine")
    page.evaluate("() => { const v = document.getElementById('result-video'); v.pause(); v.currentTime = 1.0; }")
    page.wait_for_function("() => document.getElementById('result-video').readyState >= 2")
    page.wait_for_selector("#history:not([hidden])")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_errors_are_shown_clearly(page, site, inputs):
    portrait, speech = inputs
    page.goto(site)
    page.click("#submit")
    assert page.inner_text("#error") == "Choose a portrait image (or paste its URL)."

    page.set_input_files("#image-file", str(portrait.with_name("notes.png")))
    page.set_input_files("#audio-file", str(speech))
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('not a readable image')")
    assert page.is_hidden("#progress-section")

    page.click("#kind-redub")
    assert page.is_visible("#video-drop") and page.is_hidden("#image-drop")
    page.fill("#video-url", "http://10.0.0.5/talk.mp4")
    page.click("#submit")
    # Accepted (redub fetches when it runs), then refused by the media service's address rules.
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('The job failed')",
                           timeout=30_000)
    assert "10.0.0.5" in page.inner_text("#error")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-error.png"), full_page=True)
