"""Shared fixtures: one real SeaweedFS per test session, and a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from libs.store.client import ObjectStore
from libs.store.seaweed import SeaweedServer


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A private `weed mini` on free loopback ports for the whole session."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(seaweed: SeaweedServer) -> Iterator[ObjectStore]:
    """An ObjectStore on a bucket of its own, removed afterwards."""
    settings = seaweed.settings.model_copy(update={"bucket": f"t-{uuid.uuid4().hex[:16]}"})
    object_store = ObjectStore(settings)
    object_store.ensure_bucket()
    yield object_store
    # Each bucket is a SeaweedFS collection with its own volumes: drop it so a long
    # session does not run out of volume slots.
    if seaweed.running:
        object_store.delete_bucket()


@pytest.fixture(scope="session")
def lips_together_portrait() -> str:
    """A real frontal photo with the lips together (matplotlib's Grace Hopper, fetched from
    PyPI once): FaceMesh follows its mouth as it opens, where a broad smile hides it."""
    from tests import realdata

    return str(realdata.photo("grace_hopper"))
