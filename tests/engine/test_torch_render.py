"""The torch render path (libs/talkface/torch_render.py) against the numba path, on real photos
speaking real recorded speech: every frame of a portrait job is rendered by both, from the
same landmarks and teeth affines, and compared before encoding.

The stated tolerance is PSNR >= 40 dB on every frame; the figures printed are far above it
(68-73 dB: the two paths differ only by float rounding, at most 1 grey level on a pixel).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine_contract import torch_required  # noqa: F401 - skips or fails first, by policy
import torch  # noqa: E402

from libs.talkface import api  # noqa: E402
from libs.talkface import face as F  # noqa: E402
from libs.talkface.encode import VideoReader  # noqa: E402
from libs.talkface.engine import Engine, _NumbaFrames  # noqa: E402
from libs.talkface.torch_render import TorchFrames  # noqa: E402
from tests import realdata  # noqa: E402

TOLERANCE_DB = 40.0
BATCH = 16

# photo -> (clip, emotion, emo_scale): each photo a different reading, some with an emotion
CASES = {
    "grace_hopper": ("0870", "happy", 5.0),  # lips together, glasses
    "obama_smile": ("0890", "neutral", 0.0),  # his own teeth as layers
    "obama_speaking": ("0920", "surprised", 4.0),  # caught mid-word: shut to rest, lips kept off the opening
    "tom_hanks": ("0930", "neutral", 0.0),  # grey, three-quarter view
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


class _Both:
    """Renders each chunk with both paths; hands on the numba frames, keeps the comparison."""

    def __init__(self, warper, interior, record: dict, batch: int):
        self.numba = _NumbaFrames(warper, interior)
        self.torch = TorchFrames(warper, interior, torch.device("cpu"), batch)
        self.batch = batch
        self.record = record
        self.warper, self.interior = warper, interior

    def render(self, first, pts, skulls, mandibles, eyes=None):
        got = self.torch.render(first, pts, skulls, mandibles, eyes)
        want = np.concatenate([self.numba.render(first + k, pts[k:k + 1], skulls[k:k + 1], mandibles[k:k + 1],
                                                 None if eyes is None else eyes[k:k + 1])
                               for k in range(len(pts))])
        x0, y0, x1, y1 = self.warper.roi
        self.record["psnr"] += [psnr(w, g) for w, g in zip(want, got)]
        self.record["roi_psnr"] += [psnr(w[y0:y1, x0:x1], g[y0:y1, x0:x1]) for w, g in zip(want, got)]
        self.record["max_diff"] = max(self.record.get("max_diff", 0),
                                      int(np.abs(want.astype(np.int16) - got.astype(np.int16)).max()))
        gap = self.warper._guard[3] if self.warper._guard is not None else None
        if gap is not None:  # frames whose lips close further than the portrait's: the guard works on them
            self.record["guarded"] += sum(
                np.median((p[list(F.LIPS_INNER_LOWER)] - p[list(F.LIPS_INNER_UPPER)])[3:8, 1]) < gap for p in pts)
        self.record["mouth_drawn"] += sum(
            not np.array_equal(w, self.numba.warper.warp(p, eyes=None if eyes is None else e))
            for w, p, e in zip(want, pts, eyes if eyes is not None else [None] * len(pts)))
        if eyes is not None:  # frames with the lids coming down, and with the gaze aside
            self.record["blinking"] += int((eyes[:, 0] > 0).sum())
            self.record["glancing"] += int((np.abs(eyes[:, 1:]).max(1) > 1e-4).sum())
        return want


class _TwinEngine(Engine):
    """The engine, rendering every portrait job with both paths."""

    record: dict
    chunk = BATCH

    def _frames(self, warper, interior):
        self.record = {"psnr": [], "roi_psnr": [], "guarded": 0, "mouth_drawn": 0, "blinking": 0, "glancing": 0}
        return _Both(warper, interior, self.record, self.chunk)


@pytest.fixture(scope="module")
def twin(models_path):
    return _TwinEngine(models_path, threads=2)


@pytest.fixture(scope="module")
def clips():
    return {c.name: c for c in realdata.speech_clips()}


def _compare(twin: _TwinEngine, job: api.PortraitJob, label: str):
    """Runs `job` on both paths; returns the result and the comparison's record, printed."""
    result = twin.generate(job)
    rec = twin.record
    frames = np.array(rec["psnr"])
    roi = np.array(rec["roi_psnr"])
    print(f"\n{label} ({result.frames} frames, {result.width}x{result.height}, {twin.chunk} a chunk): "
          f"PSNR torch vs numba "
          f"min {frames.min():.1f} dB, median {np.median(frames):.1f} dB; face region min {roi.min():.1f} dB; "
          f"largest difference {rec['max_diff']} grey levels; mouth drawn on {rec['mouth_drawn']} frames, "
          f"lips kept off the opening on {rec['guarded']}; lids coming down on {rec['blinking']}, "
          f"gaze aside on {rec['glancing']}")
    assert len(frames) == result.frames
    assert frames.min() >= TOLERANCE_DB
    assert roi.min() >= TOLERANCE_DB, "the face region alone is held to the tolerance too"
    assert rec["max_diff"] <= 4, "float rounding only (1 grey level measured): no pixel takes another source"
    assert len(list(VideoReader(job.out_path))) == result.frames
    return result, rec


@pytest.mark.parametrize("name", CASES)
def test_torch_frames_equal_the_numba_frames(twin, clips, name, tmp_path):
    clip, emotion, emo_scale = CASES[name]
    job = api.PortraitJob(image_path=str(realdata.photo(name)), audio_path=str(clips[clip].wav),
                          out_path=str(tmp_path / "out.mp4"), fps=25, min_resolution=512, crop=True,
                          emotion=emotion, emo_scale=emo_scale, seed=3)
    result, rec = _compare(twin, job, f"{name} + clip {clip}")
    assert rec["mouth_drawn"] > result.frames // 4, "the mouth's inside was compared, not just the warp"
    if name != "tom_hanks":  # (3.3 s of speech: no blink or glance falls in it)
        assert rec["blinking"] >= 3 and rec["glancing"] > 0, "closing lids and glances were compared"
    if name == "obama_speaking":
        assert rec["guarded"] > result.frames // 4, "the portrait's opening guard was compared"


def test_torch_frames_equal_the_numba_frames_framed_tight_in_odd_chunks(models_path, clips, tmp_path):
    """A face filling a portrait-shaped frame to its edges, chunks of 7 (the last one short)."""
    twin = _TwinEngine(models_path, threads=2)
    twin.chunk = 7
    job = api.PortraitJob(image_path=str(realdata.photo("obama_speaking")), audio_path=str(clips["0880"].wav),
                          out_path=str(tmp_path / "out.mp4"), fps=25, width=384, height=512, crop=True,
                          expand_ratio=0.05)
    result, _ = _compare(twin, job, "obama_speaking framed tight + clip 0880")
    assert result.frames % 7


def test_an_engine_on_torch_renders_in_chunks_and_says_so(models_path, clips, tmp_path):
    engine = Engine(models_path, threads=2, render_device="cpu", batch=8)
    job = api.PortraitJob(image_path=str(realdata.photo("obama_smile")), audio_path=str(clips["0880"].wav),
                          out_path=str(tmp_path / "out.mp4"), fps=25, min_resolution=256, crop=True)
    seen = []
    result = engine.generate(job, seen.append)
    assert result.extra["render"] == "torch" and result.extra["render_device"] == "cpu"
    assert result.extra["batch"] == 8 and result.extra["encoder"] == "libx264"
    rendered = [p.done for p in seen if p.stage == "render"]
    assert rendered == sorted(rendered) and rendered[-1] == result.frames
    assert len(list(VideoReader(job.out_path))) == result.frames


class _TwinRedub(Engine):
    """The engine, rendering every re-dubbed frame with both paths."""

    record: dict

    def _redub_frame(self):
        from libs.talkface.engine import _numba_redub_frame
        from libs.talkface.torch_render import redub_frame

        self.record = {"psnr": [], "mask_diff": []}

        def both(warper, interior, dest, skull, mandible, i):
            want, want_mask = _numba_redub_frame(warper, interior, dest, skull, mandible, i)
            got, got_mask = redub_frame(warper, interior, dest, skull, mandible, i, device="cpu")
            self.record["psnr"].append(psnr(want, got))
            self.record["mask_diff"].append(float(np.mean(want_mask != got_mask)))
            return want, want_mask

        return both


def test_torch_redub_frames_equal_the_numba_frames(models_path, engine, clips, tmp_path):
    """A re-dub of a real face (Obama speaking, rendered from one reading) with another reading."""
    source = tmp_path / "source.mp4"
    engine.generate(api.PortraitJob(image_path=str(realdata.photo("obama_speaking")), audio_path=str(clips["0880"].wav),
                                    out_path=str(source), fps=25, min_resolution=256, crop=True))
    twin = _TwinRedub(models_path, threads=2)
    result = twin.redub(api.RedubJob(video_path=str(source), audio_path=str(clips["0930"].wav),
                                     out_path=str(tmp_path / "out.mp4"), mask_out_path=str(tmp_path / "mask.mp4")))
    frames = np.array(twin.record["psnr"])
    masks = np.array(twin.record["mask_diff"])
    print(f"\nre-dub, {result.frames} frames: PSNR torch vs numba min {frames.min():.1f} dB, median "
          f"{np.median(frames):.1f} dB; moved-pixel masks differ on at most {masks.max():.2%} of the ROI")
    assert len(frames) == result.frames - result.extra["frames_without_face"] > 0
    assert frames.min() >= TOLERANCE_DB
    assert masks.max() < 0.001
