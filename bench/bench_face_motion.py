"""What the lids, the gaze and the head's ring cost per frame (numba render path, one thread).

One portrait (Grace Hopper, the face filling 512 px) and one real reading (LibriVox clip
0920) are planned once; then every frame is rendered (warp and mouth, no encoding) three
ways in one run, side by side: as before issue 16 (no eye remap, no head ring), with the
eyes' remap only, and with the eyes and the head's ring (what the engine does). Printed:
the best of three passes in ms per frame and the ratios to the first; saved to
bench/results/face_motion.json.

    python -m bench.bench_face_motion [--size 512] [--passes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None) -> int:
    import cv2

    from libs.talkface import api
    from libs.talkface import audio as A
    from libs.talkface import motion as M
    from libs.talkface import render as R
    from libs.talkface.engine import Engine, _NumbaFrames
    from libs.talkface.eyes import EyeModel
    from libs.talkface.mouth import MouthInterior, refine_inner_lips
    from libs.talkface.prosody import pitch_per_frame
    from tests import realdata

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--passes", type=int, default=3)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    engine = Engine()
    wav = next(c.wav for c in realdata.speech_clips() if c.name == "0920")
    job = api.PortraitJob(image_path=str(realdata.photo("grace_hopper")), audio_path=str(wav), out_path="",
                          fps=25, min_resolution=a.size, crop=True)
    img, rest, _ = engine.prepare_portrait(job)
    samples = A.load_audio(wav)
    n = int(len(samples) / A.SAMPLE_RATE * job.fps)
    track = A.mouth_track(samples, float(job.fps), n, use_phones=False)
    rest = refine_inner_lips(img, rest, M.FaceFrame.from_landmarks(rest).height)
    fields = M.ActionFields(rest)
    interior = MouthInterior(img, rest, fields.frame.height, yaw_sin=fields.yaw_sin)
    plan = M.plan_motion(rest, track, n, fields=fields, voice_pitch=pitch_per_frame(samples, float(job.fps), n))
    warp_rest = M.lip_edges_inwards(rest, fields.frame, cap=0.006)
    ways = {
        "before (no eye remap, no head ring)": R.Warper(img, warp_rest),
        "eyes' remap": R.Warper(img, warp_rest, eyes=EyeModel(rest)),
        "eyes' remap and head ring (the engine)": R.Warper(img, warp_rest, head_ring=True, eyes=EyeModel(rest)),
    }
    out = {}
    for label, warper in ways.items():
        frames = _NumbaFrames(warper, interior)
        eyes = warper.eyes is not None
        best = float("inf")
        for _ in range(a.passes):
            t = time.perf_counter()
            for i in range(n):
                pts = warper.frame_points(plan.points(i), plan.head_affine(i))[None]
                skull, mandible = plan.teeth_transforms(i)
                frames.render(i, pts, skull[None], mandible[None], plan.eye_state(i)[None] if eyes else None)  # type: ignore[index]
            best = min(best, (time.perf_counter() - t) / n * 1000)
        out[label] = {"ms_per_frame": round(best, 3), "roi": list(map(int, warper.roi))}
    base = next(iter(out.values()))["ms_per_frame"]
    load = os.getloadavg()[0]
    print(f"{n} frames of {img.shape[1]}x{img.shape[0]}, best of {a.passes} passes, load average {load:.2f}:")
    for label, row in out.items():
        row["ratio"] = round(row["ms_per_frame"] / base, 3)
        print(f"  {label:42s} {row['ms_per_frame']:6.2f} ms/frame  x{row['ratio']:.2f}  ROI {row['roi']}")
    path = os.path.join(REPO, "bench", "results", "face_motion.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"frames": n, "size": [int(img.shape[1]), int(img.shape[0])], "load_average": round(load, 2),
                   "ways": out}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
