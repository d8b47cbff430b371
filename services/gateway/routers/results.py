"""Result files behind the links the gateway signs (`result_links = "gateway"`): no API key, the
link is the permission until it expires; byte ranges for video players."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from libs.store.client import NotFound
from libs.tasks import TaskNotFound
from services.gateway import auth
from services.gateway.errors import ApiError
from services.gateway.native import NativeDep
from services.gateway.openapi import statuses
from services.gateway.responses import stream_object
from services.gateway.result_links import LinkRefused, content_type, filename

router = APIRouter(prefix="/v1", tags=["Jobs"])


def _gone() -> ApiError:
    return auth.native_error(404, "not_found", "this result is gone (the job was deleted or its retention ended)")


@router.get("/results/{job_id}/{name}", responses={
    200: {"content": {"video/mp4": {}}}, 206: {"description": "the requested byte range (Range: bytes=a-b)"},
    **statuses(404, 416, s403="the link expired (code link_expired) or was altered (invalid_link); read the "
                              "job again for a fresh one")})
def result_file(request: Request, job_id: str, name: str, native: NativeDep,
                expires: str = Query(description="when the link expires (Unix time), as signed"),
                signature: str = Query(description="the gateway's signature of the link"),
                download: Optional[str] = Query(None, description="1: save as a file (Content-Disposition)")
                ) -> Response:
    """A result file through a link in a job's `outputs` when results are served through the gateway."""
    as_file = download == "1"
    try:
        native.links.check(job_id, name, expires, as_file, signature)
    except LinkRefused as exc:
        raise auth.native_error(403, exc.code, str(exc)) from None
    try:
        rec, _ = native.gw.tasks.get(job_id)
    except TaskNotFound:
        raise _gone() from None
    key = rec.outputs.get(name)
    if key is None:
        raise _gone()
    disposition = "attachment" if as_file else "inline"
    headers = {"Content-Disposition": f'{disposition}; filename="{filename(rec, name, key)}"',
               "Cache-Control": "private, max-age=60"}

    def out_of_range(size: int) -> JSONResponse:
        body = {"error": {"code": "range_not_satisfiable", "message": f"the file has {size} bytes"}}
        return JSONResponse(body, 416, headers={"Content-Range": f"bytes */{size}"})

    try:
        return stream_object(native.gw, key, content_type(key), request.headers.get("range"), out_of_range, headers)
    except NotFound:
        raise _gone() from None
