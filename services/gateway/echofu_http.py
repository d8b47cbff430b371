"""What the EchOfU routes share: the document's answer shapes, its forms and paths, the caller's space.

Answers keep the document's shapes: `{"status": "success", ...}` or `{"status": "error",
"message": ...}`; paths are in its `static/...` / `models/...` form, each naming an object
in the caller's space (echofu_store.Space).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from services.gateway import auth
from services.gateway import echofu_store as echofu
from services.gateway.errors import ApiError
from services.gateway.intake import IntakeError, uploaded_form
from services.gateway.openapi import statuses

AUDIO_EXTENSIONS = (".wav", ".mp3", ".m4a", ".flac", ".ogg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".flv", ".webm")
MB = 1024 * 1024
TRUE = {"1", "true", "yes", "on"}


async def _space() -> echofu.Space:
    # async: no thread hop; the caller is known from the API key middleware.
    return echofu.Space.of(auth.current_key_id())


# The caller's own EchOfU files: every path a client sends or receives is relative to it.
SpaceDep = Annotated[echofu.Space, Depends(_space)]


# -- answers -------------------------------------------------------------------------------------


def ok(**body: Any) -> dict[str, Any]:
    return {"status": "success", **body}


def fail(status: int, message: str, **extra: Any) -> ApiError:
    return ApiError(status, {"status": "error", "message": message, **extra})


def local_time(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def form_doc(*names: str, files: tuple[str, ...] = (), multipart: bool = False) -> dict:
    """`openapi_extra` documenting a form body: text fields (all optional, as the document has
    them) or one required file field."""
    text = {"type": "string", "maxLength": 4096}
    if files:
        schema = {"type": "object", "required": list(files),
                  "properties": {f: {"type": "string", "format": "binary"} for f in files}}
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
    schema = {"type": "object", "properties": {name: dict(text) for name in names}}
    content = {"application/x-www-form-urlencoded": {"schema": schema}}
    if multipart:
        content["multipart/form-data"] = {"schema": schema}
    return {"requestBody": {"required": False, "content": content}}


FILE_RESPONSES = {
    200: {"description": "the file", "content": {"video/mp4": {}, "audio/wav": {}}},
    206: {"description": "the requested byte range (Range: bytes=a-b)", "content": {"video/mp4": {}, "audio/wav": {}}},
    **statuses(404, 416, s400="the path is not allowed (.., absolute, backslash)"),
}


# -- forms and paths -----------------------------------------------------------------------------


async def form_fields(request: Request) -> dict[str, str]:
    """Text fields of a urlencoded or multipart form (files in it are ignored)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            async with uploaded_form(request, {}, default_limit=MB) as form:
                return {k: v[-1] for k, v in form.fields.items()}
        except IntakeError as exc:
            raise fail(400, f"表单无法解析: {exc.message}") from exc
    if ctype.startswith("application/x-www-form-urlencoded"):
        urlencoded = await request.form()
        return {k: str(v) for k, v in urlencoded.items()}
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as exc:
            raise fail(400, "JSON 无法解析") from exc
        if isinstance(body, dict):
            return {k: "" if v is None else str(v) for k, v in body.items()}
    return {}


def safe_filename(name: str, default_stem: str) -> str:
    """An ASCII file name of letters, digits, '.', '-' and '_' that keeps the extension."""
    name = posixpath.basename((name or "").replace("\\", "/"))
    stem, ext = posixpath.splitext(name)
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("._-")[:80]
    ext = re.sub(r"[^a-z0-9]", "", ext.lower())[:8]
    stem = stem or f"{default_stem}_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
    return f"{stem}.{ext}" if ext else stem


def relative_path(path: str, allowed: tuple[str, ...], default_folder: str) -> str:
    """A client's file path (relative, absolute or a bare name) as a documented `static/...` path.

    Only the part from the last `static/` on is used: it names an object in the store, never
    a file of this machine. Anything with `..` or outside `allowed` is refused.
    """
    text = (path or "").strip().replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or any("\x00" in p for p in parts):
        raise fail(400, f"非法路径: {path}")
    if "static" in parts:
        i = len(parts) - 1 - parts[::-1].index("static")
        rel = "/".join(parts[i:])
    elif len(parts) == 1:
        rel = default_folder + parts[0]
    else:
        rel = "/".join(parts)
    if not rel.startswith(allowed):
        raise fail(400, f"路径不在允许的目录中: {path}（允许: {', '.join(allowed)}）")
    return rel


def number(fields: dict[str, str], name: str, lo: float, hi: float, default: float | None,
           integer: bool = False) -> float | None:
    raw = (fields.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise fail(400, f"{name} 必须是{'整数' if integer else '数字'}: {raw}") from None
    if not lo <= value <= hi:
        raise fail(400, f"{name} 必须在 {lo:g} 到 {hi:g} 之间")
    return value


def _folded(name: str) -> str:
    return re.sub(r"[-_\s]", "", name or "").lower()


def model_type_named(name: str) -> str | None:
    """The model type a client names, however it spells it (`ER_NeRF`, `ER NeRF`, `er-nerf`: ER-NeRF)."""
    for t in echofu.MODEL_TYPES:
        if _folded(t) == _folded(name):
            return t
    return None
