"""Blinks, gaze and head motion on real photos speaking real recorded speech, judged on the
output videos by the analysis pass (libs.talkface.alive; FaceMesh on every frame).

Two photos (Grace Hopper: glasses, heavy lids; Obama smiling), and for the blinks a third
(Obama speaking: deep-set eyes), each speak three LibriVox clips at 384 px. What a viewer
would see is asserted:
- a blink shuts the eye (its dark run, iris and lashes, down to <= 20 % of the open
  eye's) and what covers it is lid skin (its colour nearer the lid skin above the eye
  than the open eye's; on Obama speaking, whose deep-set eyes lie in the brow's shadow,
  lighter than that shadow, part way to the skin under the eye), for 150-250 ms, every
  3-5 s or so;
- the head turns with the voice (its speed follows the stressed syllables), by a few
  degrees at most, and the neck and collar below the chin stay as the portrait has them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from libs.talkface import alive, analysis, api
from tests import realdata

from .conftest import framed_portrait

FPS = 25
SIZE = 384
PHOTOS = ("grace_hopper", "obama_smile")
CLIPS = ("0870", "0890", "0920")
SHADOWED = 0.6  # skin above the eye darker than this share of the skin under it (L*): a deep-set eye


@dataclass
class Clip:
    video: analysis.VideoAnalysis
    portrait: np.ndarray
    portrait_landmarks: np.ndarray
    opening: np.ndarray  # alive.EyeOpening per frame
    wav: str
    path: str


@pytest.fixture(scope="module")
def rendered(engine, analyzer, tmp_path_factory):
    """name -> [Clip per clip]: the photo speaking each clip, cropped to the face, neutral."""
    wavs = {c.name: str(c.wav) for c in realdata.speech_clips()}
    done: dict[str, list[Clip]] = {}

    def make(name: str) -> list[Clip]:
        if name not in done:
            tmp = tmp_path_factory.mktemp(f"alive-{name}")
            out = []
            for clip in CLIPS:
                path = tmp / f"{clip}.mp4"
                result = engine.generate(api.PortraitJob(image_path=str(realdata.photo(name)), audio_path=wavs[clip],
                                                         out_path=str(path), fps=FPS, min_resolution=SIZE, crop=True,
                                                         seed=7))
                video = analysis.analyze_video(path, analyzer, keep_frames=True)
                assert video.face_found.all(), f"{name}: the analysis lost the face"
                portrait = framed_portrait(realdata.photo(name), result)
                marks = analyzer.landmarks(portrait)
                eyes = alive.EyeOpening(portrait, marks)
                opening = np.array([eyes.opening(f, m) for f, m in zip(video.frames, video.landmarks)])
                out.append(Clip(video, portrait, marks, opening, wavs[clip], str(path)))
            done[name] = out
        return done[name]

    return make


def _blinks(clip: Clip) -> list[alive.Blink]:
    return alive.blinks(clip.opening)[0]


# obama_speaking: deep-set eyes in the brow's shadow, whose shut lid takes a lighter tone
@pytest.mark.parametrize("name", PHOTOS + ("obama_speaking",))
def test_a_blink_shuts_the_eye_under_lid_skin(rendered, name):
    seen = 0
    for clip in rendered(name):
        for blink in _blinks(clip):
            if not blink.whole:
                continue  # cut off by the video's end: it may not have shut yet
            seen += 1
            assert blink.depth <= 0.2, f"{name}: a blink leaves {blink.depth:.0%} of the eye open (frame {blink.deepest})"
            before = max(0, blink.start - 2)
            colour = alive.shut_eye_colour(clip.video.frames[before], clip.video.landmarks[before],
                                           clip.video.frames[blink.deepest])
            print(f"\n{name} blink at {blink.deepest / FPS:.2f}s: {blink.depth:.2f} open; colour "
                  f"{colour.to_lid:.1f} from the lid skin, {colour.to_open_eye:.1f} from the open eye; "
                  f"L* {colour.above:.0f} above, {colour.shut:.0f} shut, {colour.under:.0f} under")
            if colour.above < SHADOWED * colour.under:
                # a deep-set eye: above it is the brow's shadow, not lid skin; a shut lid
                # comes forward out of it, lighter, skin-coloured (not a dark band)
                lift = (colour.shut - colour.above) / (colour.under - colour.above)
                assert 0.3 <= lift <= 0.9, f"{name}: the shut lid's lightness is {lift:.0%} of the way to the skin under it"
                continue
            assert colour.to_lid <= 0.7 * colour.to_open_eye, (
                f"{name}: the shut eye is coloured like the eye ({colour.to_open_eye:.1f}), not the lid "
                f"({colour.to_lid:.1f})")
    assert seen >= 3, f"{name}: only {seen} blinks in {len(CLIPS)} clips"


@pytest.mark.parametrize("name", PHOTOS)
def test_blinks_come_every_few_seconds_and_are_quick(rendered, name):
    clips = rendered(name)
    seconds = sum(c.video.n_frames for c in clips) / FPS
    count = 0
    for clip in clips:
        open_level = float(np.nanmedian(clip.opening))
        for blink in _blinks(clip):
            count += 1
            if not blink.whole:
                continue
            # the whole blink: from the first frame the lid comes down to the last it is not back up
            lo, hi = blink.deepest, blink.deepest
            while lo > 0 and clip.opening[lo - 1] < 0.85 * open_level:
                lo -= 1
            while hi + 1 < len(clip.opening) and clip.opening[hi + 1] < 0.85 * open_level:
                hi += 1
            length = (hi - lo + 2) / FPS  # the frames it shows, and the half frame either side
            assert 0.12 <= length <= 0.3, f"{name}: a blink of {length * 1000:.0f} ms"
    per = seconds / max(count, 1)
    print(f"\n{name}: {count} blinks in {seconds:.1f} s, one every {per:.1f} s")
    assert 2.0 <= per <= 6.0, f"{name}: one blink every {per:.1f} s"


def test_the_head_moves_with_the_voice_by_a_few_degrees(rendered, analyzer):
    """Head speed against the voice's stressed syllables, both photos and all clips pooled
    (FaceMesh's pose jitters by a few tenths of a degree a frame, so one short clip says
    little; tracked landmarks, steadier for the pose). The head motion of the engine before
    this one (seeded noise scaled by the loudness) measured r = 0.25 on clip 0920."""
    rs = []
    for name in PHOTOS:
        for clip in rendered(name):
            video = analysis.analyze_video(clip.path, analyzer, track=True)
            rotation = alive.head_rotation(video.landmarks, clip.portrait_landmarks)
            report = alive.head_report(rotation, clip.wav, FPS)
            print(f"\n{name}: max {report.max_angle:.1f} deg, nods over {report.nod_range:.1f} deg, "
                  f"speed vs stresses r = {report.voice_r:.2f} at {report.lag_s:.2f} s")
            assert report.max_angle <= 5.0, f"{name}: the head turns {report.max_angle:.1f} degrees"
            assert report.nod_range >= 1.0, f"{name}: the head hardly nods ({report.nod_range:.1f} degrees)"
            rs.append(report.voice_r)
    assert np.mean(rs) >= 0.35, f"head speed against the voice's stresses r = {np.mean(rs):.2f}"


@pytest.mark.parametrize("name", PHOTOS)
def test_the_neck_and_collar_stay_still(rendered, name):
    for clip in rendered(name):
        ssim = alive.collar_ssim(clip.portrait, clip.video.frames, clip.portrait_landmarks)
        assert ssim.min() >= 0.95, f"{name}: below the chin SSIM {ssim.min():.3f} (frame {ssim.argmin()})"
