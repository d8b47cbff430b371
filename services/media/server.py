"""Start the media service: MediaService plus health and reflection on one gRPC server."""

from __future__ import annotations

import logging

import av

from libs.grpcutil.server import GrpcServer, create_server
from libs.store.client import ObjectStore
from services.media.servicer import MediaServicer, media_failure
from services.media.settings import MediaSettings
from talkserve.media.v1 import media_pb2, media_pb2_grpc

__all__ = ["MediaSettings", "create_media_server"]

log = logging.getLogger(__name__)

# What the service cannot work without: failing at start beats failing every Mux.
_REQUIRED_CODECS = (("aac", "w"), ("h264", "r"), ("pcm_s16le", "w"))


def _check_codecs() -> None:
    for name, mode in _REQUIRED_CODECS:
        av.codec.Codec(name, mode)  # type: ignore[arg-type]


def create_media_server(settings: MediaSettings, store: ObjectStore) -> GrpcServer:
    """Serve MediaService from `store`; returns the started server, already SERVING."""
    _check_codecs()
    servicer = MediaServicer(store, settings)

    def register(server):
        media_pb2_grpc.add_MediaServiceServicer_to_server(servicer, server)
        return [media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name]

    handle = create_server(settings, register, classify=media_failure)
    # Nothing to load: the codecs are checked and the store is reached per request.
    handle.set_serving(True)
    return handle
