"""The plans behind blinks, gaze and head motion (eyes.py, prosody.py), on their own.

The videos are judged in tests/quality/test_face_alive.py; here, what each part promises:
the lids cover the eye instead of squeezing it, blinks and glances are seeded and timed
as people's are, the pitch tracker hears the pitch, and the head nods on the voice's
stressed syllables within a few degrees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from libs.talkface import eyes as E
from libs.talkface import face as F
from libs.talkface import prosody as P

FPS = 25.0


def _speech_like(seconds: float, rate: int = 16000, f0: float = 150.0) -> np.ndarray:
    """Syllables of a harmonic tone (4 a second, one phrase per 2 s with a pause after)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, 1) ** 2
    phrases = (t % 2.5) < 2.0
    return (0.3 * tone * syllables * phrases).astype(np.float32)


def test_the_pitch_tracker_hears_the_pitch_and_silence():
    x = _speech_like(3.0, f0=150.0)
    f0 = P.pitch_track(x)
    voiced = np.isfinite(f0)
    assert voiced.mean() > 0.3
    assert np.median(f0[voiced]) == pytest.approx(150.0, rel=0.03)
    assert not np.isfinite(P.pitch_track(np.zeros(16000, np.float32))).any()
    semis = P.pitch_per_frame(np.concatenate([_speech_like(2.0, f0=120.0), _speech_like(2.0, f0=240.0)]), FPS, 100)
    # an octave up is 12 semitones, either side of the speaker's median
    assert np.nanmedian(semis[60:100]) - np.nanmedian(semis[:40]) == pytest.approx(12.0, abs=1.0)


def test_blinks_are_seeded_quick_and_every_few_seconds():
    energy = np.zeros(int(60 * FPS), np.float32)
    track = E.eye_motion(energy, FPS, seed=1)
    assert np.array_equal(track.closure, E.eye_motion(energy, FPS, seed=1).closure)
    assert not np.array_equal(track.closure, E.eye_motion(energy, FPS, seed=2).closure)
    shut = np.nonzero(track.closure >= 1.0)[0]
    starts = np.nonzero(np.diff(np.concatenate([[0.0], (track.closure > 0).astype(float)])) > 0)[0]
    assert len(shut) >= len(starts), "every blink shuts the eye on at least one frame"
    gaps = np.diff(starts) / FPS
    assert 3.0 <= gaps.mean() <= 5.0 and gaps.min() >= E.BLINK_MIN_GAP - 1 / FPS
    for s in starts:
        length = int(np.argmax(track.closure[s:] == 0)) / FPS
        assert 0.12 <= length <= 0.28


def test_blinks_come_at_the_end_of_long_phrases():
    """Phrases of 4 s with 0.8 s pauses: most pauses get a blink soon after the phrase ends."""
    t = np.arange(int(120 * FPS)) / FPS
    energy = ((t % 4.8) < 4.0).astype(np.float32) * 0.8
    starts = E.blink_times(energy, FPS, np.random.default_rng(3))
    ends = np.arange(4.0, 120.0, 4.8)
    near = [any(0.0 <= s - e <= 0.3 for s in starts) for e in ends]
    assert np.mean(near) >= 0.5, f"{np.mean(near):.0%} of phrase ends get a blink"


def test_gaze_holds_and_jumps():
    track = E.eye_motion(np.full(int(30 * FPS), 0.5, np.float32), FPS, seed=4)
    g = track.gaze
    moves = np.nonzero(np.abs(np.diff(g[:, 0])) > 1e-6)[0]
    assert len(moves) >= 5, "the gaze moves now and then"
    holds = np.diff(moves) / FPS
    assert np.median(holds) >= 0.4, "and holds in between"
    assert np.abs(g[:, 0]).max() <= E.GAZE_ASIDE + 1e-6
    assert (np.abs(g[:, 0]) < 0.02).mean() >= 0.4, "mostly at the camera"


@pytest.fixture(scope="module")
def eye_face(engine, portrait_path):
    from libs.talkface import api

    img, rest, _ = engine.prepare_portrait(api.PortraitJob(image_path=portrait_path, audio_path="", out_path="",
                                                           min_resolution=384, crop=True))
    return img, rest


def test_a_shut_lid_covers_the_eye_it_does_not_squeeze_it(eye_face):
    """With the lids shut, no pixel of the frame takes its colour from between the
    portrait's lids: the eye is covered by skin and lashes from above and below it."""
    import cv2

    from libs.talkface import render as R

    img, rest = eye_face
    model = E.EyeModel(rest)
    warper = R.Warper(img, rest, eyes=model)
    still = warper.frame_points(rest)
    open_map = warper.backward_map(still).copy()
    shut_map = warper.backward_map(still, np.array([1.0, 0.0, 0.0], np.float32)).copy()
    half = warper.backward_map(still, np.array([0.5, 0.0, 0.0], np.float32)).copy()

    def between_the_lids(m: np.ndarray, group, shrink: int = 0) -> np.ndarray:
        lids = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(lids, [np.round(rest[list(group), :2]).astype(np.int32)], 1)
        if shrink:
            lids = cv2.erode(lids, np.ones((2 * shrink + 1,) * 2, np.uint8))
        xy = np.round(m).astype(int)
        return lids[np.clip(xy[..., 1], 0, img.shape[0] - 1), np.clip(xy[..., 0], 0, img.shape[1] - 1)].astype(bool)

    for group in (F.RIGHT_EYE, F.LEFT_EYE):
        inside_open = between_the_lids(open_map, group)
        inside_shut = between_the_lids(shut_map, group, shrink=1)
        inside_half = between_the_lids(half, group)
        assert inside_open.sum() > 100
        assert inside_shut.sum() <= 0.02 * inside_open.sum(), "a shut eye shows nothing from between the lids"
        assert 0.2 * inside_open.sum() < inside_half.sum() < 0.8 * inside_open.sum()
        # what still shows is the eye as it was (covered, not moved; but for the rim of
        # the lower lid, which comes up a little)
        same = np.abs(half[inside_half] - open_map[inside_half]).max(-1) < 1e-3
        assert same.mean() >= 0.75, "a squeezed eye would move all of it"
    assert np.array_equal(open_map, warper.backward_map(still, np.zeros(3, np.float32)))


def test_the_head_nods_on_stresses_within_a_few_degrees():
    x = _speech_like(10.0)
    n = int(10 * FPS)
    from libs.talkface.audio import loudness_envelope

    energy = loudness_envelope(x, FPS, n)
    head = P.head_motion(energy, P.pitch_per_frame(x, FPS, n), FPS, seed=0, dynamic_scale=1.0, face_height=200.0)
    deg = np.degrees(np.stack([head.roll, head.yaw, head.pitch]))
    assert np.abs(deg).max() <= P.CAP_DEG
    assert np.ptp(deg[2]) >= 1.0, "visible nods"
    peaks, _ = P.stresses(energy, np.zeros(n), FPS)
    # the nod's dips land on the stressed syllables
    dips = [int(np.argmax(deg[2][max(0, p - 5):p + 5])) + max(0, p - 5) for p in peaks]
    assert np.median(np.abs(np.array(dips) - peaks)) <= 3
    still = P.head_motion(np.zeros(n), None, FPS, seed=0, dynamic_scale=1.0, face_height=200.0)
    assert np.degrees(np.abs(still.pitch)).max() < 0.5 * np.abs(deg[2]).max(), "nearly still in silence"
    calm = P.head_motion(energy, None, FPS, seed=0, dynamic_scale=0.5, face_height=200.0)
    assert np.abs(calm.pitch).max() < np.abs(head.pitch).max()
    assert math.isclose(float(np.abs(P.head_motion(energy, None, FPS, 0, 0.0, 200.0).roll).max()), 0.0)


def test_open_lids_looking_aside_move_as_the_full_remap_moves_them(eye_face):
    """The open-lid shortcut (eyes.gaze_only, most frames) sends every pixel where the
    full lid-and-gaze remap at closure 0 sends it, and moves the iris with the gaze."""
    from libs.talkface import render as R

    img, rest = eye_face
    model = E.EyeModel(rest, img)
    warper = R.Warper(img, rest)
    m = warper.backward_map(warper.frame_points(rest))
    rx0, ry0, rx1, ry1 = warper.roi
    for k, eye in enumerate(model.eyes):
        x0, y0, x1, y1 = model.frame_box(k, rest, (ry1, rx1))
        sub = m[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
        for gu, gv in ((0.12, 0.0), (-0.1, 0.06), (0.05, -0.08)):
            args = (np.float32(gu), np.float32(gv))
            full = E.remap(np, sub[..., 0], sub[..., 1], eye, model.tables(k, np), np.float32(0.0), *args)
            fast = E.gaze_only(sub[..., 0], sub[..., 1], eye, model.tables(k, np), *args)
            moved = np.hypot(fast[0] - sub[..., 0], fast[1] - sub[..., 1])
            assert moved.max() >= 0.5 * abs(gu) * eye.width, "the iris follows the gaze"
            for a, b in zip(full, fast):
                assert np.abs(a - b).max() <= 1e-3
