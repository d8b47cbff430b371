"""Acceptance criteria of the talkface engine, judged on its output file by the analysis pass.

Speech comes from espeak-ng, whose phoneme events are the known alignment; the portrait
is a real photo with its lips together (Grace Hopper). Every number is measured by
libs.talkface.analysis on the decoded MP4 (FaceMesh on each frame), never read from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from libs.speech import Speech, write_wav
from libs.talkface import analysis, api, audio

from .conftest import build_speech, frame_labels, framed_portrait

FPS = 25
# Ordinary sentences with a pause: what lip-sync is judged on.
LIPSYNC_PARTS = [
    0.3, "Hello, and welcome to the show. Today we talk about the weather.",
    0.8, "It is going to rain later this afternoon, so take an umbrella with you.", 0.3,
]
# Sentences rich in closures (M/B/P), rounded (OW/UW/W) and open or spread vowels.
ARTICULATION_PARTS = [
    0.3, "Bob made a pop map. You go, we woo.",
    0.8, "See the eel. My mom bought a blue balloon for the baby by the pool.", 0.3,
]
CLOSED, OPEN, ROUNDED, SPREAD = ["M", "B", "P"], ["AA", "AE"], ["OW", "UW", "W"], ["IY", "EH", "AE"]


@dataclass
class Render:
    speech: Speech
    result: api.RenderResult
    video: analysis.VideoAnalysis
    loudness: np.ndarray  # of the input audio, per output frame
    labels: np.ndarray  # espeak phone per output frame
    reference: np.ndarray  # the portrait as the output frames frame it
    rest: analysis.FaceMeasure  # the portrait's own mouth at rest
    reference_landmarks: np.ndarray


@pytest.fixture(scope="module")
def render(engine, analyzer, portrait_path, tmp_path_factory):
    """render(name, parts, keep_frames=False, **job) -> Render, made once per name."""
    done: dict[str, Render] = {}

    def make(name, parts, keep_frames=False, **job) -> Render:
        if name in done:
            return done[name]
        tmp = tmp_path_factory.mktemp(name)
        speech = build_speech(parts)
        wav = tmp / "speech.wav"
        write_wav(speech, wav)
        out = tmp / "out.mp4"
        result = engine.generate(api.PortraitJob(
            image_path=str(portrait_path), audio_path=str(wav), out_path=str(out), fps=FPS,
            min_resolution=512, **job))
        video = analysis.analyze_video(out, analyzer, keep_frames=keep_frames)
        assert video.n_frames == result.frames
        assert video.face_found.all(), "the analysis lost the face on some frames"
        reference = framed_portrait(portrait_path, result)
        ref_pts = analyzer.landmarks(reference)
        done[name] = Render(
            speech=speech, result=result, video=video,
            loudness=analysis.audio_loudness(wav, video.fps, video.n_frames),
            labels=frame_labels(speech, video.fps, video.n_frames),
            reference=reference, rest=analysis.measure_face(ref_pts), reference_landmarks=ref_pts,
        )
        return done[name]

    return make


def _loudness_only(samples, fps, n_frames, **_):
    """A puppet (as audio.mouth_track_stream): the mouth opens with loudness and does nothing else."""
    energy = audio.loudness_envelope(samples, fps, n_frames)
    zeros = np.zeros(n_frames, np.float32)
    return audio.MouthTrackStream.whole(
        api.MouthTrack(open=energy, width=zeros, press=zeros.copy(), energy=energy, fps=fps))


@pytest.fixture(scope="module")
def lipsync(render):
    return render("lipsync", LIPSYNC_PARTS, keep_frames=True)


@pytest.fixture(scope="module")
def articulation(render):
    return render("articulation", ARTICULATION_PARTS)


@pytest.fixture(scope="module")
def puppet(render):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audio, "mouth_track_stream", _loudness_only)
        return render("puppet", ARTICULATION_PARTS)


def articulation_scores(r: Render) -> tuple[float, float]:
    """(opening above rest on M/B/P over that on AA/AE, relative width drop of rounded vs spread)."""
    op, w, lab = r.video.opening, r.video.width, r.labels
    closed = np.nanmean(op[np.isin(lab, CLOSED)]) - r.rest.opening
    open_ = np.nanmean(op[np.isin(lab, OPEN)]) - r.rest.opening
    assert open_ > 0.03, f"the mouth hardly opens on AA/AE: {open_:.3f} above rest"
    narrowing = 1.0 - np.nanmean(w[np.isin(lab, ROUNDED)]) / np.nanmean(w[np.isin(lab, SPREAD)])
    return closed / open_, narrowing


# ----------------------------------------------------------------------------- lip-sync


def test_lip_opening_follows_loudness(lipsync):
    r = lipsync
    best = analysis.best_lagged_correlation(r.video.opening, r.loudness, max_lag=2)
    assert best.r >= 0.6, f"lip opening vs loudness: r={best.r:.3f} at lag {best.lag}, need >= 0.6"
    assert analysis.lip_sync_correlation(r.video.opening, r.loudness) == pytest.approx(best.r)


def test_mouth_returns_to_rest_in_a_pause(lipsync):
    r = lipsync
    # the 0.8 s pause between the sentences, less 0.15 s at each end for coarticulation
    first = build_speech(LIPSYNC_PARTS[:2])
    start, end = first.duration_s + 0.15, first.duration_s + 0.8 - 0.15
    t = np.arange(r.video.n_frames) / r.video.fps
    pause = (t >= start) & (t + 1 / r.video.fps <= end)
    assert pause.sum() >= 10
    assert r.loudness[pause].max() == 0.0
    speaking = r.loudness > 0.5
    span = np.percentile(r.video.opening[speaking], 90) - r.rest.opening
    off = abs(np.median(r.video.opening[pause]) - r.rest.opening)
    assert span > 0.03
    assert off <= 0.25 * span, (
        f"pause opening {np.median(r.video.opening[pause]):.3f} vs the portrait's rest "
        f"{r.rest.opening:.3f}: off by {off:.3f}, allowed {0.25 * span:.3f}")


# ----------------------------------------------------------------------------- articulation


def test_lips_close_on_mbp_and_round_on_ow_uw_w(articulation):
    ratio, narrowing = articulation_scores(articulation)
    assert ratio <= 1 / 3, f"opening on M/B/P is {ratio:.2f} of that on AA/AE (above rest), need <= 0.33"
    assert narrowing >= 0.03, f"mouth on OW/UW/W only {narrowing:.1%} narrower than on IY/EH/AE, need >= 3%"


def test_loudness_only_puppet_fails_the_articulation_metric(puppet, articulation):
    """The metric must tell articulation from a mouth that only opens with loudness."""
    ratio, narrowing = articulation_scores(puppet)
    assert ratio > 1 / 3 and narrowing < 0.03, (ratio, narrowing)
    # and the puppet is no worse at plain lip-sync: what separates them is articulation
    r_puppet = analysis.lip_sync_correlation(puppet.video.opening, puppet.loudness)
    assert r_puppet > 0.8


# ----------------------------------------------------------------------------- identity


def test_identity_outside_mouth_and_eyes(lipsync):
    r = lipsync
    scores = np.array([
        analysis.ssim_outside_regions(r.reference, frame, pts, r.reference_landmarks, whole_frame=True, align=True)
        for frame, pts in zip(r.video.frames, r.video.landmarks)
    ])
    assert scores.min() >= 0.9, f"SSIM outside mouth and eyes: min {scores.min():.3f} (frame {scores.argmin()})"


def test_identity_of_the_face_itself_without_head_motion(render):
    """Over the head alone (no background to dilute it), with head motion off so only
    the face's own changes count."""
    r = render("still_head", LIPSYNC_PARTS, keep_frames=True, dynamic_scale=0.0)
    scores = np.array([
        analysis.ssim_outside_regions(r.reference, frame, pts, r.reference_landmarks)
        for frame, pts in zip(r.video.frames, r.video.landmarks)
    ])
    assert scores.min() >= 0.9, f"head SSIM outside mouth and eyes: min {scores.min():.3f} (frame {scores.argmin()})"



# ----------------------------------------------------------------------------- re-dub


def test_redub_follows_the_new_speech_not_the_old(engine, analyzer, portrait_path, tmp_path):
    """A talking video re-dubbed with other speech: the lips follow the new speech (r >= 0.5)
    and no longer the speech the video was made with."""
    old_wav, new_wav = tmp_path / "old.wav", tmp_path / "new.wav"
    write_wav(build_speech(LIPSYNC_PARTS), old_wav)
    write_wav(build_speech(ARTICULATION_PARTS), new_wav)
    source, out = tmp_path / "source.mp4", tmp_path / "redub.mp4"
    engine.generate(api.PortraitJob(image_path=str(portrait_path), audio_path=str(old_wav), out_path=str(source),
                                    fps=FPS, min_resolution=512))
    result = engine.redub(api.RedubJob(video_path=str(source), audio_path=str(new_wav), out_path=str(out),
                                       mask_out_path=str(tmp_path / "mask.mp4")))
    video = analysis.analyze_video(out, analyzer)
    assert video.n_frames == result.frames and video.face_found.all()
    n = video.n_frames
    r_new = analysis.lip_sync_correlation(video.opening, analysis.audio_loudness(new_wav, video.fps, n))
    # The source video loops when the new speech is longer: so does its old speech.
    old = analysis.audio_loudness(old_wav, video.fps, result.extra["source_frames"])
    r_old = analysis.lip_sync_correlation(video.opening, np.resize(old, n))
    print(f"\nre-dub lip sync: r = {r_new:.2f} with the new speech, {r_old:.2f} with the old")
    assert r_new >= 0.5, r_new
    assert r_new > r_old + 0.2, (r_new, r_old)
