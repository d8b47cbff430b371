"""Which face is animated in a group photo, judged on the output videos; and the mouth check.

insightface's group photo (six people, tests/realdata.py) speaks a LibriVox clip. The
analysis pass finds every face on the output's first frame (FaceMesh) and measures, per
face, how much the pixels around its mouth change over the video and how far its lips
open (FaceMesh tracked on each frame): one face speaks, the others stay still.
"""

from __future__ import annotations

import numpy as np
import pytest

from libs.talkface import analysis, api, choice
from libs.talkface import face as F
from libs.talkface.engine import load_image
from tests import realdata

FPS = 25
SECONDS = 4.0
OTHER = 5  # the woman at the right: another fairly frontal face


@pytest.fixture(scope="module")
def clip():
    return realdata.speech_clips()[0]


@pytest.fixture(scope="module")
def group():
    return realdata.photo("group")


def _render(engine, group, clip, out, **job):
    engine.generate(api.PortraitJob(image_path=str(group), audio_path=str(clip.wav), out_path=str(out), fps=FPS,
                                    duration=SECONDS, min_resolution=886, **job))
    _, frames = analysis.decode_video(out)
    return list(frames)


def _mouth_box(face: choice.Face, shape) -> tuple:
    lips = face.landmarks[list(F.LIPS_OUTER), :2]
    lo, hi = lips.min(0), lips.max(0)
    grow = 0.5 * (hi - lo).max()
    x0, y0 = np.maximum(0, np.floor(lo - grow)).astype(int)
    x1, y1 = np.minimum([shape[1], shape[0]], np.ceil(hi + grow)).astype(int)
    return x0, y0, x1, y1


def _per_face(analyzer, frames):
    """(faces on the first frame, mouth-region change per face, lip-opening range per face)."""
    faces = choice.find_faces(analyzer, frames[0])
    grey = [f.mean(axis=2) for f in frames]
    change, opening = [], []
    for face in faces:
        x0, y0, x1, y1 = _mouth_box(face, frames[0].shape)
        change.append(float(np.mean([np.abs(g[y0:y1, x0:x1] - grey[0][y0:y1, x0:x1]).mean() for g in grey[1:]])))
        prev, opens = face.landmarks, []
        for frame in frames:
            prev = analyzer.landmarks(frame, prev=prev, detect=False)
            opens.append(analysis.measure_face(prev).opening)
        opening.append(float(np.percentile(opens, 95) - np.percentile(opens, 5)))
    return faces, np.array(change), np.array(opening)


@pytest.fixture(scope="module")
def default_render(engine, analyzer, group, clip, tmp_path_factory):
    frames = _render(engine, group, clip, tmp_path_factory.mktemp("group") / "default.mp4")
    return _per_face(analyzer, frames)


def _speaker(change, opening) -> int:
    """The one face whose mouth moves; the test fails when it is not clearly one."""
    order = np.argsort(change)[::-1]
    speaker, runner_up = int(order[0]), int(order[1])
    assert change[speaker] > 4 * change[runner_up], f"mouth-region change per face: {np.round(change, 2)}"
    assert opening[speaker] > 0.04, f"the speaking face's lips hardly open: {np.round(opening, 3)}"
    others = np.delete(opening, speaker)
    assert others.max() < 0.015, f"another face's lips move: {np.round(opening, 3)}"
    return speaker


def test_the_largest_frontal_face_of_a_group_speaks(default_render):
    faces, change, opening = default_render
    assert len(faces) == 6, [f.describe() for f in faces]
    speaker = _speaker(change, opening)
    frontal = [f for f in faces if f.turn <= choice.FRONTAL_DEG]
    largest = max(frontal, key=lambda f: f.size)
    assert faces[speaker] is largest, (faces[speaker].describe(), [(f.describe(), round(f.size)) for f in faces])
    # and not a face turned away, as the engine animated before
    assert all(faces[speaker].size >= f.size for f in frontal)


def test_face_index_makes_another_face_speak(engine, analyzer, group, clip, tmp_path, default_render):
    faces, change, _ = default_render
    default_speaker = int(np.argmax(change))
    assert OTHER != default_speaker
    frames = _render(engine, group, clip, tmp_path / "named.mp4", face_index=OTHER)
    named_faces, named_change, named_opening = _per_face(analyzer, frames)
    assert len(named_faces) == len(faces)
    assert _speaker(named_change, named_opening) == OTHER


@pytest.mark.parametrize("name", ["grace_hopper", "obama_smile", "obama_speaking", "tom_hanks", "group"])
def test_fitted_mouths_on_real_photos_pass_the_mouth_check_and_moved_ones_do_not(analyzer, name):
    rgb = load_image(str(realdata.photo(name)))
    for face in choice.find_faces(analyzer, rgb):
        assert choice.check_mouth(analyzer, rgb, face) <= choice.MAX_MOUTH_SPREAD / 2, face.describe()
        h = float(np.linalg.norm(face.landmarks[F.CHIN, :2] - face.landmarks[F.FOREHEAD, :2]))
        for shift in (-0.12, 0.12):  # the mouth on the philtrum, or on the chin
            moved = face.landmarks.copy()
            moved[:, 1] += shift * h
            wrong = choice.Face(moved, face.presence, face.yaw, face.pitch, face.size, face.index)
            err = choice.refusal(analyzer, rgb, wrong)
            assert isinstance(err, api.MouthNotOnLipsError), (name, face.describe(), shift, wrong.mouth_spread)


def test_the_merged_detector_box_of_the_group_photo_gives_a_fit_that_is_refused(analyzer, group):
    """The biggest detector box of the group photo spans two faces; the engine used to fit the
    mesh in it and animate the result. That fit's mouth is not on the lips."""
    rgb = load_image(str(group))
    merged = max((b for level in analyzer.candidate_levels(rgb) for b in level), key=lambda b: b.width * b.height)
    pts, presence = analyzer.fit(rgb, merged)
    yaw, pitch = choice.head_pose(pts)
    fit = choice.Face(pts, presence, yaw, pitch, 0.0)
    assert choice.check_mouth(analyzer, rgb, fit) > choice.MAX_MOUTH_SPREAD
    # and the face choice does not pick it: every chosen face's mouth passes
    assert all(choice.check_mouth(analyzer, rgb, f) <= choice.MAX_MOUTH_SPREAD
               for f in choice.find_faces(analyzer, rgb))
