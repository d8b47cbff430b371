"""Take a job's inputs in: stream the upload, check each file by decoding it, store it, validate params."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import pathlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from libs.grpcutil.errors import error_code_of
from services.gateway.context import Gateway
from services.gateway.faults import http_status
from services.gateway.keys import ref, task_key
from services.gateway.portrait import PortraitRefused
from services.gateway.uploads import FilePart, Form, UploadError, read_form
from talkserve.media.v1 import media_pb2

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)

_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "literal_error",
                 "enum", "too_long", "too_short", "multiple_of", "string_pattern_mismatch"}


# How long a client should wait before retrying while the media service is unavailable.
MEDIA_RETRY_AFTER = "10"


class IntakeError(Exception):
    """An input is unusable; `status` is the HTTP status, `message` what the client is told, `reason`
    which check refused it (`bad_image`, `image_too_large`, `bad_audio`, `invalid_parameter`, ...)."""

    def __init__(self, status: int, message: str, detail: object = None, reason: str = "invalid_input"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.reason = reason

    @property
    def headers(self) -> dict[str, str] | None:
        """Retry-After for a 503 (a service the intake needs is unavailable)."""
        return {"Retry-After": MEDIA_RETRY_AFTER} if self.status == 503 else None


@dataclass
class ImageInfo:
    format: str
    width: int
    height: int


@contextlib.asynccontextmanager
async def uploaded_form(request: Request, limits: dict[str, int], default_limit: int) -> AsyncIterator[Form]:
    """The request's form, its files in a temp dir removed when the block ends."""
    with tempfile.TemporaryDirectory(prefix="talkserve-upload-") as tmp:
        try:
            form = await read_form(request, pathlib.Path(tmp), limits, default_limit)
        except UploadError as exc:
            raise IntakeError(exc.status, str(exc), reason="too_large" if exc.status == 413 else "invalid_body") from exc
        yield form


class ImageTooLarge(IntakeError):
    """The image has more pixels than the limit (its bytes may be few: a PNG of one colour)."""


def check_image(part: FilePart, allowed: tuple[str, ...], max_pixels: int) -> ImageInfo:
    """Decode the whole image: the client's content type and file name are not trusted.

    Blocking (run it on a worker thread). The size comes from the header first, so an image
    of more than `max_pixels` is refused before a byte of it is decoded.
    """
    try:
        with Image.open(part.path) as img:  # reads the header only
            fmt = img.format or ""
            width, height = img.size
            if fmt not in allowed:
                raise IntakeError(400, f"{part.field} is a {fmt or 'unknown'} image; allowed: {', '.join(allowed)}",
                                  reason="bad_image")
            if width * height > max_pixels:
                raise ImageTooLarge(400, f"{part.field} is {width}x{height} pixels; at most {max_pixels:,} pixels "
                                         f"({max_pixels / 1e6:g} megapixels) are accepted", reason="image_too_large")
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise IntakeError(400, f"{part.field} is not a readable image ({exc.__class__.__name__})",
                          reason="bad_image") from exc
    return ImageInfo(fmt, width, height)


async def check_face(gw: Gateway, path: pathlib.Path, face_index: int | None = None,
                     face_box: tuple | None = None) -> None:
    """Refuse (422, reason = the check's code) a portrait without a face talkface-1 can animate."""
    if gw.portraits is None:
        return
    started = time.perf_counter()
    try:
        face = await run_in_threadpool(gw.portraits.check, str(path), face_index, face_box)
    except PortraitRefused as exc:
        raise IntakeError(422, exc.message, reason=exc.code) from exc
    log.debug("face check %.0f ms: face %s", (time.perf_counter() - started) * 1000, face.describe())


def parse_params(model: type[M], values: Mapping[str, object], range_status: int = 400) -> M:
    """Validate form values; out-of-range values are `range_status`, malformed ones 422."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        status = range_status if all(e["type"] in _RANGE_ERRORS for e in errors) else 422
        first = errors[0]
        field = ".".join(str(p) for p in first["loc"]) or "request"
        raise IntakeError(status, f"{field}: {first['msg']}", detail=errors, reason="invalid_parameter") from exc


async def store_input(gw: Gateway, task_id: str, name: str, part: FilePart) -> str:
    """Put one uploaded file under the task's inputs; returns its key."""
    key = task_key(task_id, "inputs", name)
    await run_in_threadpool(gw.store.put_file, key, str(part.path), part.content_type or None)
    return key


def file_digest(part: FilePart) -> str:
    """SHA-256 of an uploaded file, read in pieces."""
    digest = hashlib.sha256()
    with open(part.path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


async def probe(gw: Gateway, key: str, kind: media_pb2.MediaKind, what: str) -> media_pb2.MediaInfo:
    """Have the media service decode a stored input; a mismatch is the client's fault."""
    try:
        # wait_for_ready: a media service restarting within the timeout delays the answer, no more.
        reply = await run_in_threadpool(
            gw.clients.media.probe, media_pb2.ProbeRequest(source=ref(key), expect=kind), 60, wait_for_ready=True)
    except grpc.RpcError as err:
        if http_status(err) == 400:
            raise IntakeError(400, f"{what} could not be decoded: {err.details()}", error_code_of(err),
                              reason="bad_audio" if kind == media_pb2.MEDIA_KIND_AUDIO else "bad_media") from err
        raise IntakeError(503, f"media service unavailable: {err.code().name}",
                          reason="media_unavailable") from err
    return reply.info


@dataclass
class Accepted:
    """A job's inputs, checked and stored, and its validated parameters."""

    task_id: str
    params: BaseModel
    inputs: dict[str, str]
    sha256: dict[str, str]


async def accept_upload(request: Request, gw: Gateway, image_field: str, audio_field: str,
                        params_model: type[BaseModel], image_formats: tuple[str, ...],
                        max_audio_files: int = 1, range_status: int = 400) -> Accepted:
    """Stream the form in, validate params, decode-check the image, store everything, probe the audio.

    Several audio files under `audio_field` are stored as audio_0, audio_1, ...; one as `audio`.
    Nothing stays in the store when any check fails.
    """
    limits = {image_field: gw.settings.image_max_bytes, audio_field: gw.settings.audio_max_bytes}
    task_id = str(uuid.uuid4())
    async with uploaded_form(request, limits, default_limit=gw.settings.audio_max_bytes) as form:
        image = form.file(image_field)
        audios = form.files.get(audio_field, [])
        missing = [n for n, ok in ((image_field, image is not None), (audio_field, bool(audios))) if not ok]
        if missing:
            raise IntakeError(422, f"missing file field(s): {', '.join(missing)}", reason="missing_input")
        if len(audios) > max_audio_files:
            raise IntakeError(400, f"at most {max_audio_files} audio files per request", reason="too_many_files")
        values = {k: form.value(k) for k in params_model.model_fields if form.value(k) not in (None, "")}
        params = parse_params(params_model, values, range_status)
        assert image is not None  # checked above
        await run_in_threadpool(check_image, image, image_formats, gw.settings.image_max_pixels)
        await check_face(gw, image.path)
        parts = {"image": image}
        parts.update({"audio": audios[0]} if max_audio_files == 1 else
                     {f"audio_{i}": part for i, part in enumerate(audios)})
        digests = {name: await run_in_threadpool(file_digest, part) for name, part in parts.items()}
        inputs = {name: await store_input(gw, task_id, name, part) for name, part in parts.items()}
    try:
        for name, key in inputs.items():
            if name.startswith("audio"):
                await probe(gw, key, media_pb2.MEDIA_KIND_AUDIO, f"audio file {parts[name].filename or name}")
    except IntakeError:
        await run_in_threadpool(gw.store.delete_prefix, task_key(task_id))
        raise
    return Accepted(task_id, params, inputs, digests)
