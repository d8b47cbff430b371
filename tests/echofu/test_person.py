"""The person-model engine alone: build an atlas from a clip, re-dub it, measure the result from the file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from libs.speech.espeak import synthesize, write_wav
from libs.talkface import analysis, api, person
from libs.talkface.face import FaceAnalyzer


@pytest.fixture(scope="module")
def face():
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def model(face, training_video, tmp_path_factory):
    out = tmp_path_factory.mktemp("person") / "model"
    events = []
    info = person.build_person_model(face, training_video, out, person.TrainOptions(base_seconds=3.0),
                                     progress=events.append)
    return out, info, events


def test_build_writes_a_complete_model(model):
    out, info, events = model
    assert sorted(p.name for p in out.iterdir()) == sorted(person.MODEL_FILES)
    meta = json.loads((out / person.MODEL_FILE).read_text())
    assert meta["engine"] == "talkface-person-1" and meta["frames_with_face"] == meta["frames_read"] >= 80
    assert meta["width"] == meta["height"] == 256
    # The background clip plays forward then backward: 3 s at 25 fps is 75 + 73 frames.
    assert meta["base_frames"] == 148
    lo, hi = meta["mouth_gap_range"]
    assert hi > lo + 0.05  # the clip shows the mouth open as well as shut
    assert [e.stage for e in events][0] == "analyse" and events[-1].message == "Person model built"


def test_generation_follows_the_new_speech(model, tmp_path):
    out, _, _ = model
    write_wav(synthesize("Bob made a map of the moon. Open wide and say papa.", voice="en-us"), tmp_path / "new.wav")
    result = person.generate_person_video(out, tmp_path / "new.wav", tmp_path / "video.mp4")
    assert result.engine == "talkface-person-1" and result.width == 256
    print(f"\nperson generation: {result.duration_s:.2f} s of video in {result.extra['render_seconds']:.2f} s "
          f"(RTF {result.extra['render_seconds'] / result.duration_s:.2f}); background looped "
          f"{result.extra['background_loops']} times")
    an = analysis.analyze_video(tmp_path / "video.mp4", track=True)
    assert an.face_found.all()
    new = analysis.audio_loudness(tmp_path / "new.wav", an.fps, an.n_frames)
    r_new = analysis.lip_sync_correlation(an.opening, new)
    assert r_new > 0.5
    # In the longest pause the mouth is shut like the person's own closed mouth.
    assert np.nanpercentile(an.opening, 10) < 0.06


def test_cancellation_and_bad_input(face, model, training_video, tmp_path):
    out, _, _ = model
    write_wav(synthesize("Stop here.", voice="en-us"), tmp_path / "a.wav")
    with pytest.raises(api.Cancelled):
        person.generate_person_video(out, tmp_path / "a.wav", tmp_path / "v.mp4", should_stop=lambda: True)
    assert not (tmp_path / "v.mp4").exists()
    with pytest.raises(api.BadVideoError):
        person.generate_person_video(tmp_path, tmp_path / "a.wav", tmp_path / "v.mp4")
    (tmp_path / "noface.mp4").write_bytes(b"not a video")
    with pytest.raises(api.BadVideoError):
        person.build_person_model(face, tmp_path / "noface.mp4", tmp_path / "m")


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(15, 2)) * 50
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = person.similarity(src, dst)
    assert np.allclose(m[:, :2], scale * rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)
