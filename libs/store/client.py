"""Object-store access for talkserve: files, streams, presigned URLs and conditional JSON records."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any, TypeVar

import certifi
import urllib3
from minio import Minio
from minio import time as mtime
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, S3Error, ServerError
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from libs.store.settings import StoreSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Part size for multipart uploads of streams: memory held per upload stays about this.
STREAM_PART_SIZE = 5 * 1024 * 1024  # S3's smallest allowed part
_MAX_PARTS = 10_000
_META_PREFIX = "x-amz-meta-"
_META_KEY = re.compile(r"[a-z0-9][a-z0-9-]*")
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "ResourceNotFound", "NoSuchObject"})

# How long the operations of the current context retry transient failures; None: the store's
# `retry_for_s`. A request handler sets a short window so its client hears "unavailable"
# within seconds, while background work rides out a restart.
_retry_window: contextvars.ContextVar[float | None] = contextvars.ContextVar("talkserve_store_retry", default=None)


@contextlib.contextmanager
def retry_window(seconds: float) -> Iterator[None]:
    """Within the block, give up on transient store failures after ``seconds``."""
    token = _retry_window.set(seconds)
    try:
        yield
    finally:
        _retry_window.reset(token)


def set_retry_window(seconds: float | None) -> None:
    """Set the window for the rest of the current context (an ASGI request's task)."""
    _retry_window.set(seconds)


class StoreError(Exception):
    """Base class of the errors this module raises on purpose."""


class StoreUnavailable(StoreError):
    """The store did not answer within the retry window (down, restarting or overloaded)."""


class NotFound(StoreError):
    """The object (or its bucket) does not exist."""


class AlreadyExists(StoreError):
    """A create-only write found an object already at that key."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed since the ETag it was based on."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD on an object tells: size, ETag, content type, user metadata, mtime."""

    key: str
    size: int
    etag: str
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None


class ObjectStream:
    """An object being downloaded: iterate for its chunks; the connection is always released.

    The GET is issued when this is made, so a missing object raises ``NotFound``
    before an HTTP handler commits to a 200 and starts streaming.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse, key: str, chunk: int) -> None:
        self._response = response
        self._chunk = chunk
        self._closed = False
        info = _headers_info(key, response.headers)
        self.key = key
        self.size = info.size
        self.content_type: str | None = info.content_type
        self.etag = info.etag
        self.metadata = info.metadata

    def __iter__(self) -> Iterator[bytes]:
        try:
            for piece in self._response.stream(self._chunk):
                if piece:
                    yield piece
        finally:
            self.close()

    def close(self) -> None:
        """Close and release the HTTP connection (safe to call twice)."""
        if not self._closed:
            self._closed = True
            self._response.close()
            self._response.release_conn()

    def __enter__(self) -> "ObjectStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _strip_etag(value: str | None) -> str:
    return (value or "").strip().removeprefix("W/").strip('"')


def _user_metadata(headers: Any) -> dict[str, str]:
    return {
        k.lower()[len(_META_PREFIX):]: v
        for k, v in headers.items()
        if k.lower().startswith(_META_PREFIX)
    }


def _headers_info(key: str, headers: Any) -> ObjectInfo:
    """What a GET's (or HEAD's) response headers tell of the object."""
    modified = headers.get("last-modified")
    return ObjectInfo(
        key=key,
        size=int(headers.get("content-length") or 0),
        etag=_strip_etag(headers.get("etag")),
        content_type=headers.get("content-type"),
        metadata=_user_metadata(headers),
        last_modified=mtime.from_http_header(modified) if modified else None,
    )


def _meta_headers(metadata: dict[str, str] | None) -> dict[str, str]:
    """Turn user metadata into ``x-amz-meta-*`` headers, refusing what S3 would mangle."""
    headers: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        name = key.lower().removeprefix(_META_PREFIX)
        if not _META_KEY.fullmatch(name):
            raise ValueError(f"metadata key {key!r}: use lower-case letters, digits and '-'")
        text = str(value)
        # S3 only carries printable US-ASCII in headers; anything else is silently
        # altered by some servers, so fail loudly instead.
        if not all(" " <= ch <= "~" for ch in text):
            raise ValueError(f"metadata value for {key!r} must be printable ASCII")
        headers[_META_PREFIX + name] = text
    return headers


def _http_status(exc: BaseException) -> int | None:
    if isinstance(exc, S3Error) and exc.response is not None:
        return exc.response.status
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return exc._code  # noqa: SLF001 - minio keeps the status only there
    return None


def _is_transient(exc: BaseException) -> bool:
    """True for failures that a later identical request may not hit (store restarting, overloaded)."""
    status = _http_status(exc) or 0
    server_side = status >= 500 and status != 501  # 501: not implemented, retrying won't help
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_CODES or server_side
    if isinstance(exc, (ServerError, InvalidResponseError)):
        return server_side
    # urllib3's HTTPError covers refused/reset connections, timeouts and protocol errors.
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code in _NOT_FOUND_CODES or _http_status(exc) == 404
    return False


def _is_precondition(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.code == "PreconditionFailed" or _http_status(exc) == 412
    return _http_status(exc) == 412


def _minio(settings: StoreSettings, http: urllib3.PoolManager) -> Minio:
    secret = settings.secret_key.get_secret_value()
    return Minio(
        settings.endpoint,
        access_key=settings.access_key or None,
        secret_key=secret if settings.access_key else None,
        secure=settings.secure,
        # A known region stops the SDK from asking the server for it (an extra
        # round trip, and presigning would otherwise need the network).
        region=settings.region,
        http_client=http,
    )


class ObjectStore:
    """One bucket of an S3-compatible store; thread-safe, one instance per process is enough."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s
            ),
            maxsize=32,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            # Retrying is done once, here, by tenacity; urllib3's own retries would
            # hide from us that a PUT may have been sent twice.
            retries=False,
        )
        self._client = _minio(settings, http)
        # Readiness probes must answer fast: no retries, short timeouts.
        self._probe = _minio(settings, urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1.0, read=2.0), maxsize=2, cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(), retries=False,
        ))

    # -- plumbing -----------------------------------------------------------------------

    def _retry(self, op: Callable[[], T], *, what: str = "") -> T:
        """Run ``op``; retry transient failures with jittered backoff for ``retry_for_s`` (or the
        context's window); raises ``StoreUnavailable`` when they outlast it."""
        window = _retry_window.get()
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_delay(self.settings.retry_for_s if window is None else window),
            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0.0, 0.2),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        )
        try:
            return retrying(op)
        except S3Error as exc:
            if _is_not_found(exc):
                raise NotFound(what or str(exc)) from exc
            if _is_transient(exc):
                raise StoreUnavailable(f"object store unavailable: {exc.code}") from exc
            raise
        except StoreError:
            raise
        except Exception as exc:
            if _is_transient(exc):
                raise StoreUnavailable(f"object store unavailable: {type(exc).__name__}") from exc
            raise

    def ping(self) -> bool:
        """True when the store answers a signed request for the bucket at once (no retries, 1 s to
        connect, 2 s to answer): for readiness probes."""
        try:
            return bool(self._probe.bucket_exists(self.bucket))
        except Exception:  # noqa: BLE001 - any failure means not reachable now
            return False

    # -- bucket ---------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the configured bucket unless it exists (safe when several replicas race)."""

        def op() -> None:
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
                log.info("created bucket %s", self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

        self._retry(op)

    def delete_bucket(self) -> None:
        """Delete every object and then the bucket itself (tests and teardown only)."""
        self.delete_prefix("")
        try:
            self._retry(lambda: self._client.remove_bucket(self.bucket), what=self.bucket)
        except NotFound:
            pass

    # -- writes ---------------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store ``data`` at ``key``; returns the new ETag."""
        headers = _meta_headers(metadata)
        result = self._retry(
            lambda: self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type or "application/octet-stream",
                metadata=headers,  # type: ignore[arg-type]
            )
        )
        return _strip_etag(result.etag)

    def put_file(
        self,
        key: str,
        path: str | os.PathLike[str],
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Upload a local file, streamed from disk in parts when large; returns the ETag."""
        with open(path, "rb") as fileobj:
            return self.put_stream(
                key, fileobj, os.fstat(fileobj.fileno()).st_size, content_type, metadata
            )

    def put_stream(
        self,
        key: str,
        fileobj: IO[bytes],
        length: int = -1,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Upload from a readable stream; returns the ETag.

        The body goes up in parts of ``STREAM_PART_SIZE`` (one PUT if it fits in one), so
        memory stays near two parts whatever the size and whether or not ``length`` is
        known (-1). Each part is retried on its own, so unseekable streams survive a store
        hiccup too. A stream shorter than a given ``length`` is an error.
        """
        headers = {"Content-Type": content_type or "application/octet-stream", **_meta_headers(metadata)}
        part_size = STREAM_PART_SIZE
        if length > part_size * _MAX_PARTS:
            part_size = -(-length // _MAX_PARTS)
        buffer = bytearray(min(part_size, length) if length >= 0 else part_size)
        remaining = length if length >= 0 else None
        sent = 0

        def next_part() -> tuple[bytes, bool]:
            """The next part and whether it is the last one."""
            nonlocal remaining, sent
            want = part_size if remaining is None else min(part_size, remaining)
            n = _read_into(fileobj, memoryview(buffer)[:want])
            sent += n
            if remaining is not None:
                if n < want:
                    raise StoreError(f"{key}: stream ended after {sent} of {length} bytes")
                remaining -= n
                return bytes(memoryview(buffer)[:n]), remaining == 0
            return bytes(memoryview(buffer)[:n]), n < part_size

        data, last = next_part()
        if last:
            result = self._retry(
                lambda: self._client._put_object(  # noqa: SLF001 - avoids another copy
                    self.bucket, key, data, dict(headers)
                ),
                what=self.bucket,
            )
            return _strip_etag(result.etag)

        upload_id = self._retry(
            lambda: self._client._create_multipart_upload(  # noqa: SLF001
                self.bucket, key, dict(headers)
            ),
            what=self.bucket,
        )
        parts: list[Part] = []
        try:
            while data or not parts:
                number = len(parts) + 1
                if number > _MAX_PARTS:
                    raise StoreError(f"{key}: more than {_MAX_PARTS} parts of {part_size} bytes")
                etag = self._retry(
                    lambda data=data, number=number: self._client._upload_part(  # type: ignore[misc]  # noqa: SLF001
                        self.bucket, key, data, None, upload_id, number
                    )
                )
                parts.append(Part(number, etag))
                if last:
                    break
                data = b""  # drop the sent part before reading the next: two parts, not three
                data, last = next_part()
            result = self._retry(  # type: ignore[assignment]
                lambda: self._client._complete_multipart_upload(  # noqa: SLF001
                    self.bucket, key, upload_id, parts
                )
            )
        except BaseException:
            try:
                self._client._abort_multipart_upload(self.bucket, key, upload_id)  # noqa: SLF001
            except Exception:  # noqa: BLE001 - the original error matters more
                log.warning("could not abort multipart upload of %s", key, exc_info=True)
            raise
        return _strip_etag(result.etag)

    def copy(self, source: str, dest: str) -> str:
        """Server-side copy of ``source`` to ``dest`` (same bucket); returns the new ETag."""
        from minio.commonconfig import CopySource

        result = self._retry(
            lambda: self._client.copy_object(self.bucket, dest, CopySource(self.bucket, source)), what=source
        )
        return _strip_etag(result.etag)

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        self._retry(lambda: self._client.remove_object(self.bucket, key))

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix``; returns how many."""

        def op() -> int:
            keys = [
                obj.object_name
                for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name and not obj.is_dir
            ]
            if not keys:
                return 0
            errors = list(
                self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys))
            )
            if errors:
                raise StoreError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")
            return len(keys)

        try:
            return self._retry(op, what=self.bucket)
        except NotFound:
            return 0

    # -- reads ----------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """Return the whole body of ``key`` (for small objects)."""

        def op() -> bytes:
            response = self._client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._retry(op, what=key)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> ObjectInfo:
        """Download ``key`` to ``path`` in one GET (written to a temporary file beside it,
        then renamed; minio's fget_object asks with a HEAD first)."""
        dest = os.fspath(path)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)

        def op() -> Any:
            response = self._client.get_object(self.bucket, key)
            part = f"{dest}.part-{os.getpid()}-{threading.get_ident()}"
            try:
                with open(part, "wb") as out:
                    for chunk in response.stream(1 << 20):
                        out.write(chunk)
                os.replace(part, dest)
                return response.headers
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(part)
                raise
            finally:
                response.close()
                response.release_conn()

        return _headers_info(key, self._retry(op, what=key))

    def iter_object(
        self, key: str, chunk: int = 1 << 20, offset: int = 0, length: int | None = None
    ) -> ObjectStream:
        """Open ``key`` for streaming; iterate the result for chunks of at most ``chunk`` bytes.

        ``offset``/``length`` ask for a byte range (HTTP Range responses).
        """
        response = self._retry(
            lambda: self._client.get_object(self.bucket, key, offset=offset, length=length or 0),
            what=key,
        )
        return ObjectStream(response, key, chunk)

    def stat(self, key: str) -> ObjectInfo:
        """HEAD ``key``: size, ETag, content type and user metadata; raises ``NotFound``."""
        obj = self._retry(lambda: self._client.stat_object(self.bucket, key), what=key)
        return self._info(key, obj)

    @staticmethod
    def _info(key: str, obj: Any) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            etag=_strip_etag(obj.etag),
            content_type=obj.content_type,
            metadata=_user_metadata(obj.metadata or {}),
            last_modified=obj.last_modified,
        )

    def exists(self, key: str) -> bool:
        """True if ``key`` exists."""
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def list_keys(self, prefix: str = "", recursive: bool = True) -> list[str]:
        """Keys under ``prefix``; with ``recursive=False`` only those at that level, no folders."""

        def op() -> list[str]:
            return [
                obj.object_name
                for obj in self._client.list_objects(
                    self.bucket, prefix=prefix, recursive=recursive
                )
                if obj.object_name and not obj.is_dir
            ]

        return self._retry(op, what=self.bucket)

    def presign_get(
        self,
        key: str,
        expires: timedelta,
        response_headers: dict[str, str] | None = None,
    ) -> str:
        """A URL anyone can GET until ``expires`` from now (e.g. ``response-content-disposition``)."""
        return self._client.presigned_get_object(
            self.bucket, key, expires=expires, response_headers=response_headers  # type: ignore[arg-type]
        )

    # -- conditional JSON records -----------------------------------------------------------

    def create_json(self, key: str, body: dict[str, Any], metadata: dict[str, str]) -> str:
        """Write ``body`` only if nothing is at ``key`` (``If-None-Match: *``); returns the ETag.

        Raises ``AlreadyExists`` when another writer got there first. Finding exactly this
        body already there counts as success: that is how a retried request whose first
        attempt landed looks, so callers should make bodies unique per writer.
        """
        try:
            return self._conditional_put(key, body, metadata, {"If-None-Match": "*"})
        except PreconditionFailed as exc:
            raise AlreadyExists(key) from exc

    def replace_json(
        self, key: str, body: dict[str, Any], metadata: dict[str, str], if_match: str
    ) -> str:
        """Overwrite ``key`` only if its ETag is still ``if_match``; returns the new ETag.

        Raises ``PreconditionFailed`` when the object changed (or vanished) meanwhile. The
        body must differ from the current one (callers put a revision number in it),
        because the ETag is the body's MD5 and an identical write would not change it.
        """
        try:
            return self._conditional_put(
                key, body, metadata, {"If-Match": f'"{_strip_etag(if_match)}"'}
            )
        except NotFound as exc:
            # AWS answers 404 to If-Match on a missing key, SeaweedFS 412; same meaning here.
            raise PreconditionFailed(key) from exc

    def read_json(self, key: str) -> tuple[dict[str, Any], dict[str, str], str]:
        """One GET: the body, its user metadata and its ETag, all from the same version."""

        def op() -> tuple[bytes, dict[str, str], str]:
            response = self._client.get_object(self.bucket, key)
            try:
                data = response.read()
                return data, _user_metadata(response.headers), _strip_etag(
                    response.headers.get("etag")
                )
            finally:
                response.close()
                response.release_conn()

        data, metadata, etag = self._retry(op, what=key)
        body = json.loads(data)
        if not isinstance(body, dict):
            raise StoreError(f"{key}: JSON record is not an object")
        return body, metadata, etag

    def _conditional_put(
        self,
        key: str,
        body: dict[str, Any],
        metadata: dict[str, str],
        condition: dict[str, str],
    ) -> str:
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", **_meta_headers(metadata), **condition}
        # The SDK's put_object would turn If-Match/If-None-Match into user metadata, so
        # this goes through its signed low-level request instead.
        try:
            response = self._retry(
                # The SDK adds Host/date/signature headers to the dict it gets: a fresh
                # copy per attempt keeps retries from signing stale values.
                lambda: self._client._execute(  # noqa: SLF001
                    "PUT", self.bucket, key, body=payload, headers=dict(headers)
                ),
                what=key,
            )
        except S3Error as exc:
            if not _is_precondition(exc):
                raise
            # A retried PUT whose first attempt landed but whose answer was lost looks
            # like a conflict. A single-part PUT's ETag is the MD5 of its body, and every
            # record body is unique (revision, timestamp), so an equal ETag means it was us.
            ours = hashlib.md5(payload).hexdigest()  # noqa: S324 - matching S3's ETag, not security
            try:
                current = self.stat(key).etag
            except NotFound:
                current = ""
            if current == ours:
                log.info("conditional write to %s had landed before a retry", key)
                return ours
            raise PreconditionFailed(key) from exc
        return _strip_etag(response.headers.get("etag"))


def _read_into(fileobj: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` from ``fileobj``; fewer bytes only at end of stream."""
    filled = 0
    readinto = getattr(fileobj, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            n = readinto(view[filled:]) or 0
        else:
            chunk = fileobj.read(len(view) - filled)
            n = len(chunk)
            view[filled : filled + n] = chunk
        if n == 0:
            break
        filled += n
    return filled
