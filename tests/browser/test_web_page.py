"""The web page in a real browser: Playwright drives Debian's Chromium headless against a real stack,
with every request off this machine refused.

A person drops a portrait and speech (and sees them previewed), picks an emotion, watches the
progress bar fill while a screen reader hears only the milestones, and gets the result scrolled
into view and playing; a cancelled job is a notice, not an error; the history pages through the
jobs and says why a job failed; the page starts from the same parameters as the CLI. Screenshots
land in out/test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import re
import time

import httpx

from services import cli
from tests.browser.conftest import screenshot

# Records every text the status line and the live region show, as it happened.
RECORDER = """
window.__status = []; window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  const watch = (id, into) => {
    const el = document.getElementById(id);
    new MutationObserver(() => { if (el.textContent) into.push(el.textContent); })
      .observe(el, {childList: true, characterData: true, subtree: true});
  };
  watch("status-text", window.__status);
  watch("announcer", window.__announced);
});
"""
MILESTONES = {"Your job is queued.", "Your job has started.", "Your video is ready."}
# Every element a screen reader speaks from by itself: its id.
LIVE_REGIONS = """() => [...document.querySelectorAll(
  '[aria-live], [role=status], [role=alert], [role=log], [role=timer], [role=marquee], output')]
  .filter((el) => el.tagName !== 'OUTPUT' || el.closest('[aria-live]')).map((el) => el.id)"""


def test_portrait_and_speech_become_a_playable_video(page, site, inputs, offline):
    portrait, speech = inputs
    page.add_init_script(RECORDER)
    page.goto(site)
    assert page.title().startswith("talkserve")
    assert page.is_checked("#kind-emotion")
    assert page.is_hidden("#key-section"), "keys are off locally: no key box"
    assert page.evaluate(LIVE_REGIONS) == ["announcer", "error"], "only milestones and errors are spoken"

    page.set_input_files("#image-file", str(portrait))
    page.set_input_files("#audio-file", str(speech))
    assert "portrait.png" in page.inner_text("#image-chosen")
    # The chosen files are shown: the portrait decoded as an image, the speech in a player.
    page.wait_for_function("() => { const i = document.getElementById('image-preview');"
                           " return !i.hidden && i.complete && i.naturalWidth === 512; }")
    page.wait_for_function("() => { const a = document.getElementById('audio-preview');"
                           " return !a.hidden && a.readyState >= 1 && a.duration > 2; }")
    assert page.get_attribute("#image-preview", "alt") == "Preview of the chosen portrait"
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
    # A screen reader heard the milestones, once each, and none of the many progress steps.
    announced = page.evaluate("window.__announced")
    assert announced[-1] == "Your video is ready." and set(announced) <= MILESTONES, announced
    assert len(announced) == len(set(announced)) and len(statuses) > 2 * len(announced), (announced, statuses)

    # The result is brought into view and has the focus.
    page.wait_for_function("() => { const r = document.getElementById('result-section').getBoundingClientRect();"
                           " const v = document.getElementById('result-video').getBoundingClientRect();"
                           " return r.top >= -1 && v.height > 100 && v.bottom <= window.innerHeight + 1; }")
    assert page.evaluate("document.activeElement.id") == "result-heading"

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
    assert offline.refused == []
    screenshot(page, "web-page.png")


def _fields(body: bytes) -> dict[str, str]:
    """The plain (non-file) fields of a multipart/form-data body."""
    return {name.decode(): value.decode()
            for name, value in re.findall(rb'name="([^"]+)"\r\n\r\n([^\r]*)\r\n', body)}


def test_page_starts_from_the_cli_defaults_and_a_cancel_is_no_error(page, site, inputs):
    """What the page sends untouched is what `talkserve submit emotion` sends; cancelling the job
    shows a plain notice, announced, with the error box left empty."""
    portrait, speech = inputs
    page.add_init_script(RECORDER)
    page.goto(site)
    page.set_input_files("#image-file", str(portrait))
    page.set_input_files("#audio-file", str(speech))
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.click("#submit")
    fields = _fields(sent.value.post_data_buffer)
    assert fields["kind"] == "emotion"
    for name, value in cli.PAGE_DEFAULTS["emotion"].items():
        assert float(fields[name]) == float(value) if name != "emotion" else fields[name] == value, name
    # What the page sends beyond the CLI's defaults is the API's own default.
    params = httpx.get(f"{site}/v1/info", timeout=10).json()["kinds"]["emotion"]["params"]["properties"]
    for name in set(fields) - set(cli.PAGE_DEFAULTS["emotion"]) - {"kind"}:
        assert float(fields[name]) == params[name]["default"], name
    page.click("#kind-portrait")
    assert page.input_value("#size") == cli.PAGE_DEFAULTS["portrait"]["width"] == cli.PAGE_DEFAULTS["portrait"]["height"]
    assert page.input_value("#fps") == cli.PAGE_DEFAULTS["portrait"]["fps"]

    page.wait_for_selector("#job-id:text-matches('.{36}')")
    page.click("#cancel")
    page.wait_for_selector("#notice:not([hidden])", timeout=30_000)
    assert page.inner_text("#notice") == "The job was cancelled."
    assert page.is_hidden("#error")
    colours = page.evaluate("""() => ['notice', 'error'].map((id) => {
        const el = document.getElementById(id); el.hidden = false;
        const s = getComputedStyle(el); return [s.color, s.backgroundColor]; })""")
    assert colours[0] != colours[1], "a cancelled job does not look like an error"
    page.wait_for_function("() => window.__announced.includes('The job was cancelled.')")


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
    screenshot(page, "web-page-error.png")


def test_history_says_why_jobs_failed_and_pages_through_them(page, site):
    """Jobs that failed (a video on an address the media service refuses to fetch from) show their
    reason; past a page of jobs the history has a button for older ones, which appends them and
    takes the focus there."""
    refused = "http://127.0.0.1:9/talk.mp4"  # loopback: refused by the media service's address rules
    with httpx.Client(base_url=site, timeout=60) as client:
        made = []
        for _ in range(9):
            resp = client.post("/v1/jobs", json={"kind": "redub", "video_url": refused, "audio_url": refused})
            assert resp.status_code == 201, resp.text
            made.append(resp.json()["id"])
        for job_id in made:
            for _ in range(600):
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                    break
                time.sleep(0.1)
            assert job["status"] == "FAILED", job
        reason = job["error"]
        every, cursor = [], None
        while True:
            listing = client.get("/v1/jobs", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
            every += listing["data"]
            if not listing["has_more"]:
                break
            cursor = listing["next_cursor"]
    assert reason

    page.goto(site)
    page.wait_for_selector("#history:not([hidden])")
    items = page.locator("#history-list li")
    assert items.count() == 8
    first = items.first.inner_text()
    assert "failed" in first and reason in first, first
    assert page.eval_on_selector("#history-list li .failed", "el => getComputedStyle(el).color") != \
        page.eval_on_selector("#history-list li", "el => getComputedStyle(el).color")
    assert page.is_visible("#history-more")
    page.focus("#history-more")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#history-list li').length > 8")
    page.wait_for_function(f"() => document.querySelectorAll('#history-list li').length === {min(len(every), 16)}")
    assert page.evaluate("document.activeElement === document.querySelectorAll('#history-list li')[8]")
    if len(every) <= 16:
        assert page.is_hidden("#history-more")
