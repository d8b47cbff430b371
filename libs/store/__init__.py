"""The object-store layer: settings, an S3 client with conditional writes, a local SeaweedFS."""

from libs.store.client import (
    STREAM_PART_SIZE,
    AlreadyExists,
    NotFound,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    PreconditionFailed,
    StoreError,
)
from libs.store.settings import StoreSettings

__all__ = [
    "STREAM_PART_SIZE",
    "AlreadyExists",
    "NotFound",
    "ObjectInfo",
    "ObjectStore",
    "ObjectStream",
    "PreconditionFailed",
    "StoreError",
    "StoreSettings",
]
