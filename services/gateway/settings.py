"""Gateway settings, read once from the environment (prefix TALKSERVE_GATEWAY_)."""

from __future__ import annotations

import json
import socket
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


class GatewaySettings(BaseSettings):
    """Where the gateway listens, where its services are, and the limits it enforces."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    # 8000 is the DICE-Talk and LatentSync port, 7688 EchoMimic's: both answer every API.
    ports: list[int] = [8000, 7688]
    gateway_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-gw")

    media_target: str = "127.0.0.1:50051"
    dicetalk_targets: list[str] = ["127.0.0.1:50061"]
    echomimic_targets: list[str] = ["127.0.0.1:50062"]
    latentsync_targets: list[str] = ["127.0.0.1:50063"]
    voice_targets: list[str] = ["127.0.0.1:50064"]
    # Checkpoint names LatentSync clients may ask for; must match the latentsync replicas' list.
    latentsync_checkpoints: list[str] = ["checkpoints/unet.ckpt"]

    image_max_bytes: int = 10 * MB
    image_max_pixels: int = Field(25_000_000, description="width x height a portrait may have; checked in "
                                                          "the header, before the image is decoded")
    face_check: bool = Field(True, description="check a portrait's face when its job is created (refuse a face "
                                               "talkface-1 cannot animate at once, not when the job runs)")
    face_max_turn_degrees: float = Field(45.0, ge=0.0, le=90.0, description="how far (yaw or pitch) a face may be "
                                                                             "turned and still be accepted")
    audio_max_bytes: int = 50 * MB
    video_max_bytes: int = 500 * MB  # uploads to the native API's redub jobs
    max_queue: int = Field(100, description="waiting tasks per model kind before new ones are refused")
    max_attempts: int = Field(3, description="runs of a task that may fail through the job's own fault before "
                                             "it fails for good (outages do not count)")
    outage_retry_seconds: float = Field(
        600.0, description="how long a job waits out a service or store outage (retried with backoff, "
                           "without using an attempt) before it fails with error code 'unavailable'")
    outage_backoff_max_seconds: float = Field(15.0, description="longest wait between two tries during an outage")
    store_request_retry_seconds: float = Field(
        2.0, description="how long a client request retries an unreachable store before it answers 503")
    max_body_bytes: int = Field(1 * MB, description="largest request body read whole (JSON, urlencoded forms); "
                                                    "file uploads have their own limits")
    max_json_depth: int = Field(32, description="deepest nesting of arrays and objects in a JSON body")
    lease_seconds: float = 30.0
    scan_interval_seconds: float = Field(2.0, description="how often the store is scanned for orphaned tasks")
    sweep_interval_seconds: float = Field(600.0, description="how often expired tasks are deleted")
    shutdown_grace_seconds: float = Field(20.0, description="how long running work may finish on SIGTERM")
    progress_interval_seconds: float = Field(
        1.0, description="how often a running job's progress is written to its task record "
                         "(the documented clients poll every 5 s)")
    retention_hours: float = 24.0
    rpc_timeout_seconds: float = 3600.0
    status_max_age_seconds: float = Field(
        0.5, description="how stale a status answer may be when another gateway changed the task")
    access_log: bool = Field(False, description="log every HTTP request (the ingress usually does)")
    version: str = "1.0.0"

    # EchOfU: the chat's OpenAI-compatible endpoint (POST <base_url>/chat/completions) and limits.
    llm_base_url: str = Field("", description="e.g. https://api.openai.com/v1; empty: /chat_system answers 503")
    llm_api_key: SecretStr = SecretStr("")
    llm_model: str = ""
    llm_system_prompt: str = "You are a friendly assistant in a video chat. Answer in one or two short sentences."
    llm_timeout_seconds: float = 60.0
    echofu_video_max_bytes: int = 200 * MB
    echofu_wait_seconds: float = Field(1800.0, description="how long blocking EchOfU endpoints wait for their task")

    # -- talkserve's own API (/v1), its keys, webhooks and result links --------------------------
    require_api_keys: bool = Field(False, description="refuse requests without a valid API key (on in prod)")
    # Keys as a JSON list, or a JSON object key -> name, or comma-separated; an entry
    # "sha256:<hex>" is the SHA-256 of a key, so the key itself need not be deployed.
    api_keys: Annotated[list[str] | dict[str, str], NoDecode] = []
    rate_limit_per_minute: float = Field(600.0, description="requests per API key and minute; 0: no limit")
    rate_limit_burst: int = Field(100, description="requests a key may make at once before the rate applies")
    create_rate_limit_per_minute: float = Field(60.0, description="jobs created per API key and minute; 0: no limit")
    create_rate_limit_burst: int = 10
    result_link_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600, description="lifetime of result links")
    result_links: Literal["store", "gateway"] = Field(
        "store", description="where a job's result links point: 'store', presigned links to the object store "
                             "(clients must reach it: see public_store_endpoint); 'gateway', links the gateway "
                             "signs to its own /v1/results route, so the store stays private (Kubernetes)")
    # host:port (or URL) clients reach the store at, when it differs from the gateway's own endpoint.
    public_store_endpoint: str | None = None
    public_url: str | None = Field(None, description="the gateway's address as clients see it, e.g. "
                                                     "https://talkserve.example.com; gateway result links are "
                                                     "absolute on it (webhook receivers need that), else relative")
    events_poll_seconds: float = Field(0.25, description="how often a live event stream looks for changes")
    # Signs webhooks ("whsec_<base64>"); unset: one is made and kept in the store, shared by all gateways.
    webhook_secret: SecretStr | None = None
    # Networks webhooks may be sent to although they are not public (tests, private deployments).
    webhook_allow_networks: Annotated[list[str], NoDecode] = []
    webhook_max_attempts: int = Field(8, ge=1, le=30)
    webhook_backoff_seconds: float = Field(2.0, description="wait before the first retry; doubles each time")
    webhook_backoff_max_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    webhook_workers: int = 4
    webhook_progress_interval_seconds: float = Field(
        5.0, description="least time between two `progress` webhooks of one job")
    prefer_wait_max_seconds: float = Field(
        60.0, ge=0, description="longest `Prefer: wait=N` a job creation is held for (0: never held)")

    # -- browsers on other origins (CORS) ------------------------------------------------------
    # As the upstream EchoMimic server: any origin may call every API from a web page. Bearer
    # keys are headers, not cookies, so no credentials are needed for that.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        ["*"], description="origins web pages may call from ('*': any); empty: no CORS headers at all")
    cors_allow_origin_regex: str | None = Field(None, description="origins matching this regex are allowed too")
    cors_allow_methods: Annotated[list[str], NoDecode] = ["*"]
    cors_allow_headers: Annotated[list[str], NoDecode] = Field(
        ["*"], description="request headers a page may send ('*': whatever its preflight asks for)")
    cors_expose_headers: Annotated[list[str], NoDecode] = Field(
        ["Content-Disposition", "Content-Range", "Accept-Ranges", "Location", "Retry-After", "X-Request-ID",
         "Idempotent-Replayed", "Preference-Applied"],
        description="response headers a page's script may read")
    cors_allow_credentials: bool = Field(False, description="let pages send cookies or HTTP auth (a page's "
                                                            "Authorization: Bearer header needs no credentials)")
    cors_max_age_seconds: int = Field(600, ge=0, description="how long a browser may cache a preflight's answer")

    # -- live sessions (/v1/live) ---------------------------------------------------------------
    live_services: list[str] = Field(["echomimic", "dicetalk"], description="model services whose replicas "
                                     "hold live sessions (each reports its free live slots)")
    # RTCIceServer dictionaries for the gateway's and the browser's peer connections, e.g.
    # [{"urls": "stun:stun.example.org:3478"}, {"urls": "turn:turn.example.org:3478",
    # "username": "u", "credential": "p"}]; none on loopback (docs/live.md).
    live_ice_servers: list[dict[str, Any]] = []
    live_max_sessions: int = Field(50, ge=0, description="live sessions one gateway bridges at once")
    live_max_seconds: float = Field(1800.0, gt=0, description="a live session ends after this long")
    live_failover_seconds: float = Field(2.0, gt=0, description="how long a session whose replica died looks "
                                                                "for another before it ends")

    def model_targets(self) -> dict[str, list[str]]:
        """Each model service's targets: one `host:port` per replica, or `dns:///name:port`."""
        return {"dicetalk": self.dicetalk_targets, "echomimic": self.echomimic_targets,
                "latentsync": self.latentsync_targets, "voice": self.voice_targets}

    @field_validator("api_keys", "webhook_allow_networks", "cors_allow_origins", "cors_allow_methods",
                     "cors_allow_headers", "cors_expose_headers", mode="before")
    @classmethod
    def _json_or_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("[", "{")):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value
