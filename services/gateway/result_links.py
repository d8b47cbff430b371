"""A job's result links: presigned by the object store, or signed by the gateway for its own
`/v1/results` route (`result_links = "gateway"`: the store stays private, the bytes pass
through the gateway); and the check of the gateway's signatures.

Links expire (`result_link_seconds`); a job read again (`GET /v1/jobs/{id}`) carries fresh
ones, and `/v1/jobs/{id}/outputs/{name}` (with the caller's key) is the stable address for
as long as the job is kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import mimetypes
import pathlib
import secrets
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.store.client import ObjectStore
from libs.store.settings import StoreSettings
from libs.tasks import TaskRecord
from services.gateway.settings import GatewaySettings

_PURPOSE = b"talkserve result links v1"


class LinkRefused(Exception):
    """A gateway link that is not (or no longer) good: `code` is `link_expired` or `invalid_link`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def filename(rec: TaskRecord, name: str, key: str) -> str:
    """The name a downloaded result is saved under."""
    return f"{rec.id}_{name}{pathlib.PurePosixPath(key).suffix}"


class ResultLinks:
    """Makes the links of a job's results, and checks the gateway-signed ones."""

    def __init__(self, settings: GatewaySettings, store: ObjectStore):
        self.settings = settings
        self.presigner = _presigner(settings, store)
        # Every gateway replica shares the store's credentials, so a link one signs another accepts.
        # Without credentials (a local store) a random key: links hold for this process only.
        secret = store.settings.secret_key.get_secret_value().encode() or secrets.token_bytes(32)
        self._key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()

    def _absolute(self, path: str) -> str:
        base = (self.settings.public_url or "").rstrip("/")
        return base + path

    def stable_url(self, job_id: str, name: str) -> str:
        """The gateway's own download route: it answers (with the caller's key) while the job is kept."""
        return self._absolute(f"/v1/jobs/{job_id}/outputs/{urllib.parse.quote(name)}")

    def output(self, rec: TaskRecord, name: str, key: str) -> dict[str, Any]:
        """One result's entry in the job body: a link to play, one to download, when they expire."""
        lifetime = timedelta(seconds=self.settings.result_link_seconds)
        expires = int(time.time()) + self.settings.result_link_seconds
        ctype = content_type(key)
        if self.settings.result_links == "gateway":
            url, download_url = (self.gateway_link(rec.id, name, expires, download) for download in (False, True))
        else:
            url = self.presigner.presign_get(key, lifetime, {"response-content-type": ctype})
            download_url = self.presigner.presign_get(key, lifetime, {
                "response-content-type": ctype,
                "response-content-disposition": f'attachment; filename="{filename(rec, name, key)}"'})
        return {"url": url, "download_url": download_url, "content_type": ctype,
                "expires_at": _iso(datetime.fromtimestamp(expires, UTC)),
                "stable_url": self.stable_url(rec.id, name)}

    # -- links the gateway signs ----------------------------------------------------------------

    def _signature(self, job_id: str, name: str, expires: int, download: bool) -> str:
        message = f"{job_id}\n{name}\n{expires}\n{int(download)}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def gateway_link(self, job_id: str, name: str, expires: int, download: bool) -> str:
        query = urllib.parse.urlencode({"expires": expires, **({"download": 1} if download else {}),
                                        "signature": self._signature(job_id, name, expires, download)})
        return self._absolute(f"/v1/results/{job_id}/{urllib.parse.quote(name)}?{query}")

    def check(self, job_id: str, name: str, expires: str, download: bool, signature: str) -> None:
        """Accept a link this gateway (or a sibling) signed and that has not expired; else `LinkRefused`."""
        try:
            until = int(expires)
        except ValueError:
            raise LinkRefused("invalid_link", "this result link is damaged; read the job again for a fresh one") \
                from None
        expected = self._signature(job_id, name, until, download).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass")):
            raise LinkRefused("invalid_link", "this result link is damaged; read the job again for a fresh one")
        if time.time() > until:
            when = _iso(datetime.fromtimestamp(until, UTC))
            raise LinkRefused("link_expired", f"this result link expired at {when}; GET /v1/jobs/{job_id} "
                                              "gives fresh links")


def _presigner(settings: GatewaySettings, store: ObjectStore) -> ObjectStore:
    """The store client that signs result links: for the public endpoint when one is configured."""
    public = settings.public_store_endpoint
    if not public:
        return store
    own = store.settings
    return ObjectStore(StoreSettings(**{**own.model_dump(), "secret_key": own.secret_key, "endpoint": public}))
