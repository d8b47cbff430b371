"""`python -m services.media`: run the media service until SIGTERM, then drain and stop."""

from __future__ import annotations

from libs import logs
from libs.grpcutil.server import serve_until_signal
from libs.store.client import ObjectStore
from libs.store.settings import StoreSettings
from services.media.server import MediaSettings, create_media_server


def main() -> None:
    """Settings from TALKSERVE_MEDIA_* and TALKSERVE_S3_*; serve until a signal."""
    settings = MediaSettings()
    logs.configure("media")
    handle = create_media_server(settings, ObjectStore(StoreSettings()))
    serve_until_signal(handle, settings.grace_seconds)


if __name__ == "__main__":
    main()
