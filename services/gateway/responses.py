"""Stream a stored result to the client without holding it in memory, honouring a byte range."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.responses import Response, StreamingResponse

from services.gateway.context import Gateway

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class OutOfRange(Exception):
    """The asked range lies outside the file (416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte a single `Range: bytes=a-b` asks for; None without a usable range
    (the whole file); raises `OutOfRange` for a range outside the file."""
    match = _RANGE.fullmatch((header or "").strip())
    if not match or not (match.group(1) or match.group(2)) or size <= 0:
        return None
    if match.group(1):
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    else:
        start, end = max(0, size - int(match.group(2))), size - 1
    if start >= size or start > end:
        raise OutOfRange
    return start, end


def stream_object(gw: Gateway, key: str, media_type: str, range_header: str | None,
                  out_of_range: Callable[[int], Response], headers: dict[str, str] | None = None) -> Response:
    """The object at `key`, whole (200) or the asked range (206) that video players seek with;
    `out_of_range(size)` answers a range outside the file. Raises the store's `NotFound`."""
    size = gw.store.stat(key).size
    headers = {"Accept-Ranges": "bytes", **(headers or {})}
    try:
        wanted = byte_range(range_header, size)
    except OutOfRange:
        return out_of_range(size)
    if wanted:
        start, end = wanted
        headers.update({"Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)})
        stream = gw.store.iter_object(key, offset=start, length=end - start + 1)
        return StreamingResponse(stream, 206, media_type=media_type, headers=headers)
    headers["Content-Length"] = str(size)
    return StreamingResponse(gw.store.iter_object(key), media_type=media_type, headers=headers)


def stream_result(gw: Gateway, key: str, filename: str, media_type: str = "video/mp4") -> StreamingResponse:
    info = gw.store.stat(key)
    return StreamingResponse(
        gw.store.iter_object(key),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Length": str(info.size)},
    )
