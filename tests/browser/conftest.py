"""The browser tests' Chromium (Debian's, driven by Playwright), a fresh profile per test, and one
stack for the package's modules."""

from __future__ import annotations

import pytest

from tests import servers

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="package")
def chromium() -> str:
    from scripts import ensure_chromium

    try:
        return ensure_chromium.ensure()
    except RuntimeError as exc:
        pytest.skip(f"no Chromium to drive: {exc}")


@pytest.fixture(scope="package")
def site(seaweed):
    """The gateway's base URL on a stack of its own, shared by the browser tests."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket) as back, \
            servers.gateway(back, progress_interval_seconds=0.1, events_poll_seconds=0.1) as url:
        yield url


@pytest.fixture
def page(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # A fresh profile per test: nothing cached or stored from an earlier run.
        context = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=chromium,
                                                        headless=True, args=CHROMIUM_ARGS,
                                                        viewport={"width": 1000, "height": 1400})
        try:
            yield context.new_page()
        finally:
            context.close()
