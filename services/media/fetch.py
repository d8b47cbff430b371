"""Download a client-supplied URL to a local file without letting the client reach our network.

Every connection, at every redirect hop, goes through libs.safehttp, which refuses
non-public addresses and connects to exactly the address it checked. Bodies stream to
disk under a byte limit and the whole fetch runs under one deadline.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Annotated, Any

import httpcore
import httpx
from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from libs.safehttp import (  # noqa: F401 - re-exported: the media service's error codes
    DEFAULT_PORTS,
    URL_FORBIDDEN_ADDRESS,
    URL_HTTP_ERROR,
    URL_SCHEME,
    URL_TIMEOUT,
    URL_TOO_LARGE,
    URL_UNRESOLVABLE,
    AddressPolicy,
    FetchError,
    GuardedBackend,
    check_url,
    redact,
)

log = logging.getLogger(__name__)

_REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024
_USER_AGENT = "talkserve-media/1"


class FetchSettings(BaseSettings):
    """Limits on fetching remote inputs (environment: TALKSERVE_MEDIA_*)."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_MEDIA_", extra="ignore")

    fetch_max_bytes: int = 500 * 1024 * 1024
    fetch_timeout_seconds: float = 300.0
    fetch_connect_timeout_seconds: float = 10.0
    max_redirects: int = 5
    # Networks that may be fetched from although they are not public (comma-separated
    # or a JSON list in the environment). Empty in production.
    fetch_allow_networks: Annotated[list[str], NoDecode] = []

    @field_validator("fetch_allow_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("fetch_allow_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value


@dataclass
class FetchResult:
    """What was written to the destination file."""

    size_bytes: int
    content_type: str
    sha256: str
    final_url: str


def fetch_url(
    url: str,
    dest: str | os.PathLike,
    settings: FetchSettings,
    *,
    max_bytes: int = 0,
    timeout: float | None = None,
) -> FetchResult:
    """Download `url` into the file `dest`; raise FetchError when refused or failed.

    `max_bytes` and `timeout` may lower the configured limits, never raise them.
    """
    limit = settings.fetch_max_bytes if max_bytes <= 0 else min(max_bytes, settings.fetch_max_bytes)
    seconds = settings.fetch_timeout_seconds if timeout is None else min(timeout, settings.fetch_timeout_seconds)
    deadline = time.monotonic() + seconds
    policy = AddressPolicy(settings.fetch_allow_networks)
    current = check_url(url)
    backend = GuardedBackend(policy, deadline, settings.fetch_connect_timeout_seconds)
    try:
        with httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            network_backend=backend,
            max_connections=1,
            retries=0,
        ) as pool:
            for _hop in range(settings.max_redirects + 1):
                got = _get(pool, current, dest, limit, deadline)
                if isinstance(got, _Body):
                    return FetchResult(got.size, got.content_type, got.sha256, final_url=str(current))
                nxt = current.join(got)
                log.info("fetch: %s redirects to %s", redact(current), redact(nxt))
                current = check_url(str(nxt))
            raise FetchError(URL_HTTP_ERROR, f"more than {settings.max_redirects} redirects")
    except FetchError:
        _discard(dest)
        raise
    except httpcore.TimeoutException as exc:
        _discard(dest)
        raise FetchError(URL_TIMEOUT, f"fetching {redact(current)} took longer than {seconds:.0f} s") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        _discard(dest)
        if time.monotonic() >= deadline:
            raise FetchError(URL_TIMEOUT, f"fetching {redact(current)} took longer than {seconds:.0f} s") from exc
        raise FetchError(URL_HTTP_ERROR, f"fetching {redact(current)} failed: {exc or type(exc).__name__}") from exc


@dataclass
class _Body:
    """A body written to disk by one hop."""

    size: int
    content_type: str
    sha256: str


def _get(pool: httpcore.ConnectionPool, url: httpx.URL, dest, limit: int, deadline: float) -> str | _Body:
    """GET one hop: return the redirect target, or the body once it is in `dest`."""
    left = max(0.001, deadline - time.monotonic())
    target = httpcore.URL(
        scheme=url.raw_scheme,
        host=url.raw_host,
        port=url.port or DEFAULT_PORTS[url.scheme],
        target=url.raw_path,
    )
    headers = [
        (b"Host", url.netloc),
        (b"User-Agent", _USER_AGENT.encode()),
        (b"Accept", b"*/*"),
        # Stored as sent: a compressed body would be neither what the limit measured nor media.
        (b"Accept-Encoding", b"identity"),
    ]
    extensions = {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}
    with pool.stream("GET", target, headers=headers, extensions=extensions) as response:
        status = response.status
        header = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        if status in _REDIRECT_STATUSES:
            if "location" not in header:
                raise FetchError(URL_HTTP_ERROR, f"{redact(url)} answered {status} without a Location")
            return header["location"]
        if not 200 <= status < 300:
            raise FetchError(URL_HTTP_ERROR, f"{redact(url)} answered HTTP {status}")
        declared = header.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise FetchError(URL_TOO_LARGE, f"the body is {int(declared)} bytes, more than the limit of {limit}")
        digest = hashlib.sha256()
        size = 0
        with open(dest, "wb") as out:
            for chunk in response.iter_stream():
                size += len(chunk)
                # Content-Length can lie or be absent: the bytes actually received decide.
                if size > limit:
                    raise FetchError(URL_TOO_LARGE, f"the body is more than the limit of {limit} bytes")
                if time.monotonic() > deadline:
                    raise httpcore.ReadTimeout("the fetch's time limit was reached")
                digest.update(chunk)
                out.write(chunk)
        return _Body(size=size, content_type=header.get("content-type", ""), sha256=digest.hexdigest())


def _discard(dest) -> None:
    try:
        os.unlink(dest)
    except FileNotFoundError:
        pass
