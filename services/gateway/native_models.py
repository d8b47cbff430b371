"""The response bodies of talkserve's own API (`/v1`); they are its OpenAPI documentation."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from libs.tasks import TaskStatus


class JobOutput(BaseModel):
    """One result file."""

    url: str = Field(description="expiring link: GET it to play or fetch the file (no API key needed); "
                                 "presigned by the store, or signed by the gateway (`/v1/results/...`)")
    download_url: str = Field(description="expiring link that downloads the file as an attachment")
    content_type: str
    expires_at: str = Field(description="when both links stop working (ISO 8601, UTC); read the job again "
                                        "for fresh ones")
    stable_url: str = Field(description="the gateway's own download route (`/v1/jobs/{id}/outputs/{name}`, "
                                        "with your API key): it works for as long as the job is kept")


class WebhookState(BaseModel):
    """How the delivery of the job's final event to its `webhook_url` went."""

    id: str = Field(description="the `webhook-id` header, the same on every retry")
    state: Literal["sending", "delivered", "failed"]
    attempts: int
    last_status: Optional[int] = None
    last_error: Optional[str] = None


class Job(BaseModel):
    """A job as talkserve's own API shows it, whichever API created it."""

    id: str
    kind: str = Field(description="portrait, emotion or redub (or the task kind of other APIs' jobs)")
    task_kind: str = Field(description="the task kind that runs it: echomimic, dicetalk, latentsync, ...")
    api: str = Field(description="the API that created it: native, dicetalk, echomimic or latentsync")
    status: TaskStatus
    progress: float = Field(description="0.0 to 1.0")
    message: str
    stage: Optional[str] = Field(None, description="queued, analysing, rendering, uploading, ... while running")
    done: Optional[int] = Field(None, description="units of the stage done (frames while rendering)")
    total: Optional[int] = Field(None, description="units of the stage in all")
    eta_seconds: Optional[float] = Field(None, description="estimated seconds until rendering ends")
    queue_position: Optional[int] = Field(None, description="0-based place in the queue while waiting")
    engine: Optional[str] = Field(description="the engine that made the result, e.g. talkface-1")
    params: dict[str, Any]
    inputs: list[str]
    outputs: dict[str, JobOutput] = Field(description="result files by name (video, mask, segment_0, ...)")
    result: dict[str, Any] = Field(description="what the engine reported: frames, fps, width, height, duration")
    error: Optional[str]
    error_code: Optional[str]
    metadata: Optional[dict[str, Any]] = Field(None, description="the client's own data given at creation, "
                                                                 "echoed here and in every webhook")
    webhook_url: Optional[str] = None
    webhook_events: Optional[list[str]] = Field(None, description="the events sent to `webhook_url`: start, "
                                                                  "progress, completed, failed, cancelled")
    webhook: Optional[WebhookState] = Field(None, description="delivery of the final event")
    created_at: str
    updated_at: str
    started_at: Optional[str] = None
    links: dict[str, str]

    model_config = {"json_schema_extra": {"examples": [{
        "id": "5b0f7e1c-3f3a-4d36-9a59-1f3c2a9d1e0b", "kind": "emotion", "task_kind": "dicetalk", "api": "native",
        "status": "COMPLETED", "progress": 1.0, "message": "Video generated successfully", "stage": None,
        "done": None, "total": None, "eta_seconds": None, "queue_position": None, "engine": "talkface-1",
        "params": {"emotion": "happy", "fps": 24, "min_resolution": 256}, "inputs": ["image", "audio"],
        "outputs": {"video": {"url": "http://127.0.0.1:8333/talkserve/tasks/5b0f.../outputs/result.mp4?X-Amz-...",
                              "download_url": "http://127.0.0.1:8333/talkserve/tasks/...&response-content-disposition=...",
                              "content_type": "video/mp4", "expires_at": "2025-01-01T13:00:00Z",
                              "stable_url": "/v1/jobs/5b0f.../outputs/video"}},
        "result": {"frames": 96, "fps": 24.0, "width": 256, "height": 256, "duration_seconds": 4.0},
        "error": None, "error_code": None, "metadata": {"order": "A-1042"},
        "webhook_url": "https://example.com/hooks/talkserve", "webhook_events": ["completed", "failed", "cancelled"],
        "webhook": {"id": "msg_5b0f...", "state": "delivered", "attempts": 1, "last_status": 200,
                    "last_error": None},
        "created_at": "2025-01-01T12:00:00Z", "updated_at": "2025-01-01T12:00:09Z",
        "started_at": "2025-01-01T12:00:00Z",
        "links": {"self": "/v1/jobs/5b0f...", "events": "/v1/jobs/5b0f.../events", "cancel": "/v1/jobs/5b0f.../cancel"},
    }]}}


class JobList(BaseModel):
    """One page of the caller's jobs, newest first."""

    data: list[Job]
    has_more: bool
    next_cursor: Optional[str] = Field(description="pass as `cursor` for the next page; null on the last")


class WebhookSecret(BaseModel):
    """The secret that signs the webhooks of the caller's jobs."""

    secret: str = Field(description="whsec_<base64>; verify with any Standard Webhooks library")
    scheme: str = "Standard Webhooks v1 (HMAC-SHA256 over '{webhook-id}.{webhook-timestamp}.{body}')"


class KindInfo(BaseModel):
    summary: str
    inputs: list[str]
    params: dict[str, Any] = Field(description="JSON schema of the kind's parameters")


class Info(BaseModel):
    """What this server offers: version, whether keys are needed, the kinds of job and their parameters."""

    version: str
    api_keys_required: bool
    kinds: dict[str, KindInfo]
    limits: dict[str, int]
