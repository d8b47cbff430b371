"""MediaService over gRPC: object refs to temporary files, the media functions, results back to the store.

Translation only. The work is in `ops` and `fetch`; this module moves objects between the
store and a per-request temporary directory (always removed); `media_failure` says which
status each of its failures answers (libs.grpcutil.interceptor ends the RPC with it).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile

import grpc
import urllib3
from minio.error import S3Error, ServerError

from libs.grpcutil.errors import Failure, InvalidRequest
from libs.store.client import NotFound, ObjectStore
from libs.store.client import StoreUnavailable as StoreDown
from services.media import ops
from services.media.fetch import URL_TIMEOUT, FetchError, fetch_url
from services.media.settings import MediaSettings
from talkserve.media.v1 import media_pb2, media_pb2_grpc

log = logging.getLogger(__name__)

_KINDS = {
    media_pb2.MEDIA_KIND_UNSPECIFIED: None,
    media_pb2.MEDIA_KIND_AUDIO: ops.KIND_AUDIO,
    media_pb2.MEDIA_KIND_VIDEO: ops.KIND_VIDEO,
    media_pb2.MEDIA_KIND_IMAGE: ops.KIND_IMAGE,
}

# Time kept back from the caller's deadline for probing and uploading after a fetch.
_UPLOAD_MARGIN_SECONDS = 5.0


class SourceMissing(Exception):
    """A source object named in the request does not exist."""

    code = "object_not_found"


class StoreUnavailable(Exception):
    """The object store could not be reached or answered with a server error."""

    code = "store_unavailable"


class StoreFailed(Exception):
    """The object store refused a request (not for a missing object)."""

    code = "store_error"


def _store_failure(exc: Exception, what: str) -> Exception:
    """Classify a store exception: outages are worth retrying elsewhere or later, refusals are not."""
    message = f"{what}: {type(exc).__name__}: {exc}"
    status = getattr(getattr(exc, "response", None), "status", None)
    if isinstance(exc, (StoreDown, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, ServerError)) or (
        isinstance(exc, S3Error) and (status or 0) >= 500
    ):
        return StoreUnavailable(message)
    return StoreFailed(message)


def media_failure(exc: BaseException) -> Failure | None:
    """The status of the media service's own failures (ErrorInterceptor maps the common ones)."""
    if isinstance(exc, FetchError):
        status = grpc.StatusCode.DEADLINE_EXCEEDED if exc.code == URL_TIMEOUT else grpc.StatusCode.INVALID_ARGUMENT
        return Failure(status, exc.code, str(exc))
    if isinstance(exc, ops.MediaError):
        return Failure(grpc.StatusCode.INVALID_ARGUMENT, exc.code, str(exc))
    if isinstance(exc, SourceMissing):
        return Failure(grpc.StatusCode.NOT_FOUND, exc.code, str(exc))
    if isinstance(exc, StoreUnavailable):
        return Failure(grpc.StatusCode.UNAVAILABLE, exc.code, str(exc))
    if isinstance(exc, StoreFailed):
        return Failure(grpc.StatusCode.INTERNAL, exc.code, str(exc))
    return None


_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[\w.+-]+(\s*;[ -~]*)?", re.ASCII)


def _safe_content_type(value: str) -> str:
    """The remote server's content type if it is a plain one, else application/octet-stream."""
    value = value.strip()
    return value if len(value) <= 200 and _CONTENT_TYPE.fullmatch(value) else "application/octet-stream"


def info_message(info: ops.MediaInfo) -> media_pb2.MediaInfo:
    """The proto form of a probe result."""
    return media_pb2.MediaInfo(
        format=info.format,
        duration_seconds=info.duration_seconds,
        has_video=info.has_video,
        has_audio=info.has_audio,
        width=info.width,
        height=info.height,
        fps=info.fps,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        sample_rate=info.sample_rate,
        channels=info.channels,
        size_bytes=info.size_bytes,
    )


class MediaServicer(media_pb2_grpc.MediaServiceServicer):
    """Serves MediaService from one object store."""

    def __init__(self, store: ObjectStore, settings: MediaSettings):
        self.store = store
        self.settings = settings

    # -- objects <-> files ---------------------------------------------------------------

    def _key(self, ref, field: str) -> str:
        if not ref.key:
            raise InvalidRequest(f"{field}.key is empty")
        # One service, one bucket: naming another would let a caller read what it may not.
        if ref.bucket and ref.bucket != self.store.settings.bucket:
            raise InvalidRequest(f"{field}.bucket {ref.bucket!r} is not served here")
        return ref.key

    def _download(self, ref, field: str, path: str) -> str:
        key = self._key(ref, field)
        try:
            self.store.get_file(key, path)
        except NotFound as exc:
            raise SourceMissing(f"{field}: no object {key!r}") from exc
        except Exception as exc:
            raise _store_failure(exc, f"reading {key!r}") from exc
        return path

    def _upload(self, path: str, key: str, content_type: str, metadata: dict[str, str] | None = None) -> None:
        try:
            self.store.put_file(key, path, content_type=content_type, metadata=metadata)
        except Exception as exc:
            raise _store_failure(exc, f"writing {key!r}") from exc

    def _workdir(self) -> tempfile.TemporaryDirectory:
        return tempfile.TemporaryDirectory(prefix="media-", dir=self.settings.work_dir)

    @staticmethod
    def _kind(value: media_pb2.MediaKind) -> str | None:
        if value not in _KINDS:
            raise InvalidRequest(f"unknown media kind {value}")
        return _KINDS[value]

    # -- RPCs ----------------------------------------------------------------------------

    def FetchUrl(self, request: media_pb2.FetchUrlRequest, context) -> media_pb2.FetchUrlResponse:
        dest_key = self._key(request.destination, "destination")
        expect = self._kind(request.expect)
        timeout = None
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = max(1.0, remaining - _UPLOAD_MARGIN_SECONDS)
        with self._workdir() as tmp:
            body = os.path.join(tmp, "body")
            result = fetch_url(request.url, body, self.settings, max_bytes=request.max_bytes, timeout=timeout)
            if expect:
                info = info_message(ops.probe(body, expect))
            else:
                try:
                    info = info_message(ops.probe(body))
                except ops.MediaError:
                    info = media_pb2.MediaInfo(size_bytes=result.size_bytes)  # anything goes
            self._upload(body, dest_key, _safe_content_type(result.content_type), {"sha256": result.sha256})
        return media_pb2.FetchUrlResponse(
            size_bytes=result.size_bytes, content_type=result.content_type, sha256=result.sha256, info=info
        )

    def Probe(self, request: media_pb2.ProbeRequest, context) -> media_pb2.ProbeResponse:
        expect = self._kind(request.expect)
        with self._workdir() as tmp:
            path = self._download(request.source, "source", os.path.join(tmp, "source"))
            info = ops.probe(path, expect)
        return media_pb2.ProbeResponse(info=info_message(info))

    def NormalizeAudio(self, request: media_pb2.NormalizeAudioRequest, context) -> media_pb2.NormalizeAudioResponse:
        dest_key = self._key(request.destination, "destination")
        with self._workdir() as tmp:
            src = self._download(request.source, "source", os.path.join(tmp, "source"))
            wav = os.path.join(tmp, "audio.wav")
            duration, pcm_sha256 = ops.normalize_audio(src, wav, request.max_seconds)
            self._upload(wav, dest_key, "audio/wav", {"pcm-sha256": pcm_sha256})
        return media_pb2.NormalizeAudioResponse(duration_seconds=duration, pcm_sha256=pcm_sha256)

    def EncodeAudio(self, request: media_pb2.EncodeAudioRequest, context) -> media_pb2.EncodeAudioResponse:
        dest_key = self._key(request.destination, "destination")
        ops.aac_rate(0, request.sample_rate)  # a rate it cannot write is refused before any download
        with self._workdir() as tmp:
            src = self._download(request.source, "source", os.path.join(tmp, "source"))
            out = os.path.join(tmp, "audio.m4a")
            duration = ops.encode_audio(src, out, rate=request.sample_rate)
            self._upload(out, dest_key, "audio/mp4")
        return media_pb2.EncodeAudioResponse(duration_seconds=duration, padding_seconds=ops.PREENCODE_PAD_SECONDS)

    def Mux(self, request: media_pb2.MuxRequest, context) -> media_pb2.MuxResponse:
        dest_key = self._key(request.destination, "destination")
        ops.aac_rate(0, request.sample_rate)
        with self._workdir() as tmp:
            video = self._download(request.video, "video", os.path.join(tmp, "video"))
            audio = self._download(request.audio, "audio", os.path.join(tmp, "audio"))
            out = os.path.join(tmp, "out.mp4")
            info = ops.mux(video, audio, out, rate=request.sample_rate)
            self._upload(out, dest_key, "video/mp4")
        return media_pb2.MuxResponse(info=info_message(info))

    def Concat(self, request: media_pb2.ConcatRequest, context) -> media_pb2.ConcatResponse:
        dest_key = self._key(request.destination, "destination")
        with self._workdir() as tmp:
            paths = [
                self._download(ref, f"sources[{i}]", os.path.join(tmp, f"clip{i:04d}"))
                for i, ref in enumerate(request.sources)
            ]
            out = os.path.join(tmp, "out.mp4")
            info = ops.concat(paths, out)
            self._upload(out, dest_key, "video/mp4")
        return media_pb2.ConcatResponse(info=info_message(info))
