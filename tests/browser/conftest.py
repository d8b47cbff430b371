"""Fixtures of the browser tests (the web page, the API docs, the cross-origin page): one Debian
Chromium driven by Playwright for the whole session, a fresh context (no cache, no storage) per
test with every request off this machine refused, real services and a real store behind the
gateway, real inputs made by the tests."""

from __future__ import annotations

import pathlib
import urllib.parse

import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from services.stack import ROOT
from tests import servers

ARTIFACTS = ROOT / "out" / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="session")
def chromium() -> str:
    from scripts import ensure_chromium

    try:
        return ensure_chromium.ensure()
    except RuntimeError as exc:
        pytest.skip(f"no Chromium to drive: {exc}")


@pytest.fixture(scope="session")
def browser(chromium):
    """One Chromium for the session: starting one costs seconds, a context costs milliseconds."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chrome
        finally:
            chrome.close()


class Offline:
    """Refuses every request that leaves this machine, and remembers what was refused."""

    def __init__(self):
        self.refused: list[str] = []

    def __call__(self, route) -> None:
        url = route.request.url
        host = urllib.parse.urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
            route.continue_()
        else:
            self.refused.append(url)
            route.abort("internetdisconnected")


@pytest.fixture
def offline() -> Offline:
    return Offline()


@pytest.fixture
def context(browser, offline):
    """A fresh browser context (nothing cached or stored) with no network beyond this machine."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 1100}, accept_downloads=True)
    ctx.route("**/*", offline)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context):
    return context.new_page()


@pytest.fixture(scope="session")
def backend(seaweed):
    """The media and model services, shared by every gateway of the browser tests."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket) as back:
        yield back


@pytest.fixture(scope="session")
def site(backend):
    """A gateway with the local defaults: its base URL."""
    with servers.gateway(backend, progress_interval_seconds=0.1, events_poll_seconds=0.1) as url:
        yield url


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    folder = tmp_path_factory.mktemp("browser-inputs")
    Image.fromarray(data.astronaut()).save(folder / "portrait.png")
    write_wav(synthesize("Hello! This page made me talk. Now watch my lips follow every word.", voice="en"),
              folder / "speech.wav")
    write_wav(synthesize("Bob made a map.", voice="en"), folder / "short.wav")
    (folder / "notes.png").write_bytes(b"this is text, not a picture\n" * 40)
    return folder / "portrait.png", folder / "speech.wav"


def screenshot(page, name: str) -> pathlib.Path:
    """A full-page screenshot under out/test-artifacts/ for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
