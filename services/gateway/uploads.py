"""Read a multipart/form-data request as it streams in, with a byte limit per file field.

Starlette's form parser spools every file whole before the handler can look at it; this
reader writes each file part to a temp file as chunks arrive and stops the upload as soon
as a part passes its limit, so an oversized file never sits in memory or on disk whole.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 64


class UploadError(Exception):
    """The body is not usable multipart/form-data; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass
class FilePart:
    """One uploaded file, already on local disk."""

    field: str
    filename: str
    content_type: str
    path: pathlib.Path
    size: int = 0


@dataclass
class Form:
    """The parsed form: text fields and file parts by field name, in arrival order."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FilePart]] = field(default_factory=dict)

    def value(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def file(self, name: str) -> FilePart | None:
        parts = self.files.get(name)
        return parts[0] if parts else None


async def read_form(request: Request, tmp_dir: pathlib.Path, limits: dict[str, int],
                    default_limit: int) -> Form:
    """Stream the request body into `tmp_dir`; a file field over its limit is a 413."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError("the request must be multipart/form-data", status=422)
    form = Form()
    state: dict = {"headers": {}, "name": None, "file": None, "buf": bytearray(), "count": 0,
                   "hfield": b"", "hvalue": b"", "error": None}

    def on_part_begin():
        state["headers"] = {}
        state["count"] += 1
        if state["count"] > MAX_PARTS:
            state["error"] = UploadError(f"too many form parts (at most {MAX_PARTS})", status=413)

    def on_header_field(data, start, end):
        state["hfield"] += data[start:end]

    def on_header_value(data, start, end):
        state["hvalue"] += data[start:end]

    def on_header_end():
        state["headers"][state["hfield"].lower()] = state["hvalue"]
        state["hfield"], state["hvalue"] = b"", b""

    def on_headers_finished():
        disposition, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        state["buf"] = bytearray()
        if b"filename" in opts:
            filename = opts[b"filename"].decode("utf-8", "replace")
            ctype = state["headers"].get(b"content-type", b"application/octet-stream").decode("latin-1")
            index = sum(len(v) for v in form.files.values())
            path = tmp_dir / f"upload-{index}"
            part = FilePart(field=name, filename=os.path.basename(filename), content_type=ctype, path=path)
            form.files.setdefault(name, []).append(part)
            state["file"] = (part, open(path, "wb"))
        else:
            state["file"] = None

    def on_part_data(data, start, end):
        if state["error"] is not None:
            return
        chunk = data[start:end]
        if state["file"] is not None:
            part, fh = state["file"]
            part.size += len(chunk)
            limit = limits.get(part.field, default_limit)
            if part.size > limit:
                state["error"] = UploadError(
                    f"{part.field} is larger than the limit of {limit // (1024 * 1024)} MB",
                    status=413, field=part.field,
                )
                return
            fh.write(chunk)
        else:
            state["buf"] += chunk
            if len(state["buf"]) > MAX_FIELD_BYTES:
                state["error"] = UploadError(f"form field {state['name']} is too long", status=413)

    def on_part_end():
        if state["file"] is not None:
            state["file"][1].close()
            state["file"] = None
        elif state["name"] is not None:
            form.fields.setdefault(state["name"], []).append(state["buf"].decode("utf-8", "replace"))

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if state["error"] is not None:
                raise state["error"]
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # python-multipart raises its own parse errors
        raise UploadError(f"malformed multipart body: {exc}", status=400) from exc
    finally:
        if state["file"] is not None:
            state["file"][1].close()
    return form
