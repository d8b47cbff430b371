"""Face detection and landmarks (BlazeFace + FaceMesh) on real pictures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from libs.talkface import face as F
from libs.talkface.api import NoFaceError


@pytest.fixture(scope="module")
def analyzer(engine):
    return engine.face


def test_astronaut_face_found(analyzer, astronaut):
    box = analyzer.detect(astronaut)
    assert box is not None
    # the astronaut's face is around x 175-275, y 80-175 in the 512 px picture
    assert 165 < box.center[0] < 285 and 80 < box.center[1] < 180
    pts = analyzer.landmarks(astronaut)
    assert pts.shape == (468, 3) and pts.dtype == np.float32
    # anatomy, in image coordinates: eyes above the nose above the mouth above the chin,
    # subject's right eye and mouth corner on the image's left
    eye_y = (pts[F.RIGHT_EYE_TOP, 1] + pts[F.LEFT_EYE_TOP, 1]) / 2
    assert eye_y < pts[F.NOSE_TIP, 1] < pts[F.INNER_LIP_UPPER_MID, 1] < pts[F.CHIN, 1]
    assert pts[F.MOUTH_CORNERS[0], 0] < pts[F.INNER_LIP_UPPER_MID, 0] < pts[F.MOUTH_CORNERS[1], 0]
    assert pts[F.RIGHT_EYE_CORNERS[0], 0] < pts[F.LEFT_EYE_CORNERS[0], 0]
    assert 190 < pts[F.NOSE_TIP, 0] < 250 and 110 < pts[F.NOSE_TIP, 1] < 150


def test_tracking_agrees_with_detection(analyzer, astronaut):
    pts = analyzer.landmarks(astronaut)
    tracked = analyzer.landmarks(astronaut, prev=pts)
    assert np.abs(tracked[:, :2] - pts[:, :2]).mean() < 1.0


@pytest.mark.parametrize("scale,canvas,pos", [
    (0.5, (1200, 1600), (1150, 600)),  # face ~48 px in a 1600 px picture, lower right
    (1.0, (1080, 1920), (40, 500)),  # full-size astronaut at the left edge of a 1080p frame
    (0.35, (1024, 1024), (600, 80)),
])
def test_small_face_anywhere(analyzer, astronaut, scale, canvas, pos):
    ref = analyzer.landmarks(astronaut)
    small = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    img = np.full(canvas + (3,), 128, np.uint8)
    h, w = small.shape[:2]
    x, y = pos
    img[y:y + h, x:x + w] = small
    pts = analyzer.landmarks(img)
    back = (pts[:, :2] - (x, y)) / scale
    # error measured in the original picture's pixels (the face is ~95 px there)
    assert np.abs(back - ref[:, :2]).mean() < 4.0


def test_rotated_face(analyzer, astronaut):
    ref = analyzer.landmarks(astronaut)
    m = cv2.getRotationMatrix2D((256, 256), 35, 1.0)
    rot = cv2.warpAffine(astronaut, m, (512, 512))
    pts = analyzer.landmarks(rot)
    expected = ref[:, :2] @ m[:, :2].T + m[:, 2]
    assert np.abs(pts[:, :2] - expected).mean() < 2.0


@pytest.mark.parametrize("name", ["gradient", "coffee", "noise"])
def test_no_face(analyzer, name):
    import skimage.data

    if name == "gradient":
        img = np.tile(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], (480, 1, 3))
    elif name == "coffee":
        img = skimage.data.coffee()
    else:
        img = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError, match="face"):
        analyzer.landmarks(img)


def test_index_groups_are_valid():
    groups = [F.LIPS_OUTER, F.LIPS_INNER, F.RIGHT_EYE, F.LEFT_EYE, F.RIGHT_BROW, F.LEFT_BROW,
              F.FACE_OVAL, F.RIGHT_CHEEK, F.LEFT_CHEEK]
    for g in groups:
        assert all(0 <= i < 468 for i in g)
        assert len(set(g)) == len(g)
    assert F.INNER_LIP_UPPER_MID == 13 and F.INNER_LIP_LOWER_MID == 14
    assert F.MOUTH_CORNERS == (61, 291)
