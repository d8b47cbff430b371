"""Where EchOfU's files live in the store: each owner's space, its history lists, the ids it names.

Each owner has a space (`Space`), and the documented `static/...` and `models/...` paths map
one to one onto keys in the caller's space.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from libs.store.client import AlreadyExists, NotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

API = "echofu"
ROOT = "echofu/"
INPUT_WAV_DOCUMENTED = "EchOfU/static/audios/input.wav"
REF_VOICES = "static/voices/ref_voices/"
RES_VOICES = "static/voices/res_voices/"
REF_VIDEOS = "static/videos/ref_videos/"
RES_VIDEOS = "static/videos/res_videos/"
# The built-in person-model type, and the two types the EchOfU pages offer. Models of every type
# are built and rendered by talkface's person model (Video Rewrite): the upstream types are names
# the pages filter by, and each model's `engine` says what really made it.
BUILTIN_TYPE = "talkface-person"
PERSON_ENGINE = "talkface-person-1"
UPSTREAM_TYPES = {
    "ER-NeRF": "ER-NeRF's own code (PyTorch, CUDA extensions, audio features, hours of GPU training) is not "
               "shipped: an ER-NeRF model here is built and rendered by talkface's person model",
    "SyncTalk": "SyncTalk's own code and checkpoints (tri-plane NeRF, a CUDA GPU) are not shipped: a SyncTalk "
                "model here is built and rendered by talkface's person model",
}
MODEL_TYPES = (BUILTIN_TYPE, *UPSTREAM_TYPES)
HISTORY_LIMIT = 500
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True)
class Space:
    """One owner's EchOfU files: uploads, person models, voices, speakers, videos, history.

    Every key has a space of its own under `echofu/keys/<key id>/`, so a key can neither see
    nor name, nor overwrite by reusing an id, what another key made; without keys (the local
    default) every caller shares the anonymous space, `echofu/` itself. The documented
    `static/...` and `models/...` paths clients send and receive are relative to the caller's
    space.
    """

    root: str

    @classmethod
    def of(cls, key_id: str | None) -> Space:
        """The space of an API key's id (None: anonymous callers)."""
        return cls(ROOT if key_id is None else f"{ROOT}keys/{key_id}/")

    def static_key(self, relative: str) -> str:
        """`static/...` (as documented) -> its object key."""
        return self.root + relative

    def models_prefix(self, model_type: str) -> str:
        return f"{self.root}models/{model_type}/"

    def model_prefix(self, model_type: str, model_id: str) -> str:
        return f"{self.models_prefix(model_type)}{model_id}/"

    @property
    def speakers_prefix(self) -> str:
        return f"{self.root}speakers/"

    def speaker_key(self, speaker_id: str) -> str:
        return f"{self.speakers_prefix}{speaker_id}.json"

    def history_key(self, history_type: str) -> str:
        return f"{self.root}history/{history_type}.json"

    @property
    def input_wav(self) -> str:
        """The chat's recording, `static/audios/input.wav` (one per space: the last one wins)."""
        return self.static_key("static/audios/input.wav")

    def staging_key(self, suffix: str = "") -> str:
        """A fresh key for an upload being checked."""
        return f"{self.root}uploads/{secrets.token_hex(8)}{suffix}"


def model_path(model_type: str, model_id: str) -> str:
    """The documented form of a model's path."""
    return f"models/{model_type}/{model_id}"


def valid_id(value: str) -> bool:
    return bool(_ID.match(value or ""))


def new_id(prefix: str) -> str:
    """`prefix_YYYYMMDD_HHMMSS_xxxxxx`: the documented form, unique by its random tail."""
    return f"{prefix}_{datetime.now().strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"


def append_history(store: ObjectStore, space: Space, history_type: str, entry: dict) -> None:
    """Add an entry to the space's `history/<type>.json` with compare-and-swap, keeping the newest
    HISTORY_LIMIT."""
    key = space.history_key(history_type)
    for _ in range(20):
        try:
            body, _, etag = store.read_json(key)
        except NotFound:
            try:
                store.create_json(key, {"revision": 1, "entries": [entry]}, {})
                return
            except AlreadyExists:
                continue
        entries = (body.get("entries") or [])[-(HISTORY_LIMIT - 1):] + [entry]
        try:
            store.replace_json(key, {"revision": int(body.get("revision", 0)) + 1, "entries": entries}, {}, etag)
            return
        except PreconditionFailed:
            time.sleep(0.05)
    log.warning("could not record %s history entry after 20 tries", history_type)


def read_history(store: ObjectStore, space: Space, history_type: str) -> list:
    try:
        body, _, _ = store.read_json(space.history_key(history_type))
    except NotFound:
        return []
    return body.get("entries") or []


def now_text() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")
