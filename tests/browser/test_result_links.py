"""Result links expire, and the page goes on playing and downloading: it takes fresh links from
the API when the ones it has stop working. Both kinds of link: presigned by the store (the local
default) and signed by the gateway for its own route (the Kubernetes default)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests import servers

LIFETIME = 3  # seconds a result link works


@pytest.fixture(scope="module", params=["store", "gateway"])
def short_links(request, backend):
    with servers.gateway(backend, progress_interval_seconds=0.1, events_poll_seconds=0.1,
                         result_link_seconds=LIFETIME, result_links=request.param) as url:
        yield request.param, url


def test_an_expired_link_still_plays_and_downloads(page, short_links, inputs, tmp_path):
    mode, site = short_links
    portrait, speech = inputs
    page.goto(site)
    page.set_input_files("#image-file", str(portrait))
    page.set_input_files("#audio-file", str(speech.with_name("short.wav")))
    page.select_option("#min-resolution", "256")
    page.click("#submit")
    page.wait_for_selector("#result-section:not([hidden])", timeout=120_000)
    page.wait_for_function("() => document.getElementById('result-video').readyState >= 2", timeout=30_000)
    first = page.eval_on_selector("#result-video", "v => v.src")
    assert first.startswith(site + "/v1/results/") if mode == "gateway" else "X-Amz-Expires" in first

    time.sleep(LIFETIME + 1.5)
    old = page.request.get(first)
    assert old.status == 403, "the first link has expired"

    # The player loads its source again (as after a long pause): it renews the link and plays.
    page.evaluate("() => { const v = document.getElementById('result-video'); v.muted = true; v.load(); }")
    page.wait_for_function("() => { const v = document.getElementById('result-video');"
                           f" return v.src !== {first!r} && v.readyState >= 2; }}", timeout=30_000)
    page.evaluate("() => document.getElementById('result-video').play()")
    page.wait_for_function("() => document.getElementById('result-video').currentTime > 0.3", timeout=15_000)
    assert page.is_hidden("#error")

    # The download link has expired too by now; a click downloads all the same.
    time.sleep(LIFETIME + 1.5)
    with page.expect_download(timeout=30_000) as download:
        page.click("#download")
    saved = tmp_path / "result.mp4"
    download.value.save_as(saved)
    body = saved.read_bytes()
    assert body[4:8] == b"ftyp"
    job_id = page.inner_text("#job-id")
    stable = httpx.get(f"{site}/v1/jobs/{job_id}/outputs/video", timeout=30)
    assert stable.status_code == 200 and stable.content == body
    assert download.value.suggested_filename == f"{job_id}_video.mp4"
