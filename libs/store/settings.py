"""Connection settings for the S3-compatible object store (SeaweedFS locally, MinIO in k8s)."""

from __future__ import annotations

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StoreSettings(BaseSettings):
    """Where the object store is and how to talk to it; read from ``TALKSERVE_S3_*``."""

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_S3_", extra="ignore")

    endpoint: str = "127.0.0.1:8333"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    secure: bool = False
    bucket: str = "talkserve"
    region: str = "us-east-1"
    # How long transient failures (connection refused, 5xx) are retried before an
    # operation gives up: long enough to ride out a store pod restart.
    retry_for_s: float = 30.0
    # Per-request socket timeouts; reads are per socket read, not per object.
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0

    @model_validator(mode="after")
    def _split_scheme(self) -> "StoreSettings":
        # The minio SDK wants a bare host:port; people paste URLs, so accept both.
        for scheme, secure in (("https://", True), ("http://", False)):
            if self.endpoint.startswith(scheme):
                self.endpoint = self.endpoint[len(scheme):]
                self.secure = secure
        self.endpoint = self.endpoint.rstrip("/")
        return self
