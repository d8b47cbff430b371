"""Gateway settings, read once from the environment (prefix TALKSERVE_GATEWAY_)."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    # Checkpoint names LatentSync clients may ask for; must match the latentsync replicas' list.
    latentsync_checkpoints: list[str] = ["checkpoints/unet.ckpt"]

    image_max_bytes: int = 10 * MB
    audio_max_bytes: int = 50 * MB
    max_queue: int = Field(100, description="waiting tasks per model kind before new ones are refused")
    max_attempts: int = Field(3, description="runs of a task before it fails for good")
    lease_seconds: float = 30.0
    scan_interval_seconds: float = Field(2.0, description="how often the store is scanned for orphaned tasks")
    sweep_interval_seconds: float = Field(600.0, description="how often expired tasks are deleted")
    shutdown_grace_seconds: float = Field(20.0, description="how long running work may finish on SIGTERM")
    progress_interval_seconds: float = 0.5
    retention_hours: float = 24.0
    rpc_timeout_seconds: float = 3600.0
    version: str = "1.0.0"
