"""Settings of the media service, read once at start from TALKSERVE_MEDIA_* variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from libs.grpcutil.server import ServerSettings
from services.media.fetch import FetchSettings


class MediaSettings(ServerSettings, FetchSettings):
    """Where the media service listens, its fetch limits and its scratch space.

    Env: TALKSERVE_MEDIA_HOST, _PORT, _MAX_WORKERS, _GRACE_SECONDS, _WORK_DIR,
    _FETCH_MAX_BYTES, _FETCH_TIMEOUT_SECONDS, _FETCH_CONNECT_TIMEOUT_SECONDS,
    _MAX_REDIRECTS, _FETCH_ALLOW_NETWORKS.
    """

    model_config = SettingsConfigDict(env_prefix="TALKSERVE_MEDIA_", extra="ignore")

    port: int = 50051
    # Each request works in its own temporary directory under this one (system default if unset).
    work_dir: str | None = None
