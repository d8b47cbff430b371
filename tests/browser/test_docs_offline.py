"""The API reference loads with no network: /docs (Swagger UI) and /redoc (ReDoc) come from the
gateway's own files, and both list the operations of the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="module")
def operations(site) -> list[tuple[str, str]]:
    doc = httpx.get(f"{site}/openapi.json", timeout=10).json()
    return [(method.upper(), path) for path, ops in doc["paths"].items() for method in ops]


def test_swagger_ui_lists_the_operations_offline(page, site, offline, operations):
    page.goto(f"{site}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    shown = page.eval_on_selector_all(".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-method')"
                                                  ".textContent, e.querySelector('.opblock-summary-path')"
                                                  ".getAttribute('data-path')])")
    assert {tuple(op) for op in shown} == set(operations)
    assert page.is_visible("text=talkserve")
    # An operation opens, with its parameters.
    page.click("#operations-Jobs-list_jobs_v1_jobs_get .opblock-summary")
    page.wait_for_selector("#operations-Jobs-list_jobs_v1_jobs_get tr[data-param-name='cursor']")
    assert offline.refused == [], "the page asked for something off this machine"


def test_redoc_lists_the_operations_offline(page, site, offline, operations):
    page.goto(f"{site}/redoc")
    page.wait_for_selector("[data-section-id^='operation/']", state="attached", timeout=60_000)
    sections = page.eval_on_selector_all("[data-section-id^='operation/']", "els => els.length")
    assert sections >= len(operations)
    create = page.locator("[data-section-id='operation/create_job_v1_jobs_post']").first.inner_text()
    assert create.startswith("Create Job") and "upload files" in create and "Idempotency-Key" in create
    assert offline.refused == [], "the page asked for something off this machine"
