"""Browsers on another origin: preflights answered, CORS headers on every API, configurable.

The upstream EchoMimic server allowed any origin; talkserve does the same by default
(`TALKSERVE_GATEWAY_CORS_ALLOW_ORIGINS`). The browser itself is in tests/browser/test_cors_page.py.
"""

from __future__ import annotations

import pytest
import requests

from services.gateway.settings import GatewaySettings
from tests import servers

PAGE = "http://127.0.0.1:5173"  # a page served from another port is another origin


def _preflight(base: str, path: str, origin: str = PAGE, method: str = "POST",
               headers: str | None = None) -> requests.Response:
    ask = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        ask["Access-Control-Request-Headers"] = headers
    return requests.options(f"{base}{path}", headers=ask, timeout=10)


@pytest.mark.parametrize("path", ["/generate_video", "/sync", "/api/v1/synthesis/start", "/v1/jobs",
                                  "/model_training", "/task/anything"])
def test_preflight_is_answered_on_every_api(stack, path):
    base, _ = stack
    r = _preflight(base, path, headers="content-type, authorization, idempotency-key")
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    # A wildcard does not cover Authorization in browsers: the asked-for headers are named.
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "authorization", "idempotency-key"} <= allowed
    assert int(r.headers["access-control-max-age"]) == 600
    assert r.headers["x-request-id"]  # preflights pass the request observer too


def test_answers_carry_the_origin_header(stack):
    base, _ = stack
    missing = requests.get(f"{base}/task/nope", headers={"Origin": PAGE}, timeout=10)
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"
    info = requests.get(f"{base}/v1/info", headers={"Origin": PAGE}, timeout=10)
    assert info.status_code == 200 and info.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip() for h in info.headers["access-control-expose-headers"].split(",")}
    assert {"Content-Disposition", "X-Request-ID", "Retry-After"} <= exposed
    # Not a browser (no Origin): nothing added.
    assert "access-control-allow-origin" not in requests.get(f"{base}/v1/info", timeout=10).headers


def test_configured_origins_only(stack):
    _, back = stack
    with servers.gateway(back, cors_allow_origins=["https://studio.example"]) as base:
        ok = _preflight(base, "/generate_video", origin="https://studio.example")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://studio.example"
        other = _preflight(base, "/generate_video", origin="https://elsewhere.example")
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        plain = requests.get(f"{base}/v1/info", headers={"Origin": "https://elsewhere.example"}, timeout=10)
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
    with servers.gateway(back, cors_allow_origins=[]) as base:
        off = _preflight(base, "/generate_video")
        assert off.status_code == 405 and "access-control-allow-origin" not in off.headers


def test_keys_required_still_answer_preflights(stack):
    _, back = stack
    with servers.gateway(back, require_api_keys=True, api_keys=["sk-page"]) as base:
        # A browser sends no key with a preflight: it must not be refused for that.
        r = _preflight(base, "/v1/jobs", headers="authorization")
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        # The 401 itself is readable by the page's script.
        refused = requests.get(f"{base}/v1/jobs", headers={"Origin": PAGE}, timeout=10)
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("TALKSERVE_GATEWAY_CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TALKSERVE_GATEWAY_CORS_EXPOSE_HEADERS", '["X-One"]')
    s = GatewaySettings()
    assert s.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert s.cors_expose_headers == ["X-One"]
    monkeypatch.delenv("TALKSERVE_GATEWAY_CORS_ALLOW_ORIGINS")
    assert GatewaySettings().cors_allow_origins == ["*"]  # the upstream servers' default
