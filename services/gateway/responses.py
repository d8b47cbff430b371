"""Stream a stored result to the client without holding it in memory."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from services.gateway.context import Gateway


def stream_result(gw: Gateway, key: str, filename: str, media_type: str = "video/mp4") -> StreamingResponse:
    info = gw.store.stat(key)
    return StreamingResponse(
        gw.store.iter_object(key),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Length": str(info.size)},
    )
