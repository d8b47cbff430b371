"""Check a portrait's face when its job is created: the face talkface-1 would animate, or why it cannot.

The check runs here, in the gateway, with the engine's own face choice (libs/talkface/choice.py:
BlazeFace and FaceMesh on LiteRT, no gRPC in it), rather than as an RPC to a model service:
- a refusal is an answer to the upload, so it must not wait on a model replica that may be
  busy, restarting or scaled to zero: jobs for those are queued and wait out an outage, and
  uploads should too;
- the models are small (3 .tflite files, already in every image) and the analysis is tens of
  milliseconds on a worker thread (bench/results/face_check.txt), less than storing the upload;
- the engine runs the same choice on the same image when the job runs, so both agree on the
  face, and a job that reaches the engine some other way is still refused there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from libs.talkface import api
from libs.talkface.choice import Face, choose_face
from libs.talkface.face import FaceAnalyzer
from libs.talkface.image import load_image

log = logging.getLogger(__name__)


class PortraitRefused(Exception):
    """The portrait has no face talkface-1 can animate; `code` says why (no_face, no_such_face,
    face_turned, mouth_not_on_lips, bad_image), the message says it to the client."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class PortraitChecker:
    """The face models, loaded once on first use (FaceAnalyzer serialises its LiteRT calls itself)."""

    def __init__(self, max_turn_degrees: float = 45.0, models_dir: str | None = None):
        self.max_turn = max_turn_degrees
        self._models_dir = models_dir
        self._analyzer: FaceAnalyzer | None = None
        self._lock = threading.Lock()

    def _face(self) -> FaceAnalyzer:
        with self._lock:
            if self._analyzer is None:
                self._analyzer = FaceAnalyzer(self._models_dir, threads=1)
            return self._analyzer

    def check(self, path: str, face_index: int | None = None, face_box: Sequence[int] | None = None) -> Face:
        """The face the engine will animate; PortraitRefused when there is none it can. Blocking."""
        try:
            rgb = load_image(path)
            return choose_face(self._face(), rgb, face_index, face_box, self.max_turn)
        except api.InputError as exc:  # what choose_face and load_image raise for the client's portrait
            raise PortraitRefused(exc.code, str(exc)) from exc
