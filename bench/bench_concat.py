"""Benchmark: joining clips by stream copy (the media service) against re-encoding them.

The source wrappers join EchoMimic's clips by decoding them and encoding the whole
video again with libx264. This makes N clips the way talkserve's pipeline does (an H.264
video from the engine, its audio added by `ops.mux`), then times:

  copy      `services.media.ops.concat`: packets copied, nothing decoded;
  ffmpeg-c  the ffmpeg concat demuxer with `-c copy`, for reference;
  reencode  ffmpeg decoding all clips and encoding the join with libx264 + AAC
            (the wrappers' way, at ffmpeg's default preset).

Usage: python bench/bench_concat.py [--clips 8] [--seconds 5] [--size 512] [--fps 24] [--repeat 3]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

import av
import imageio_ffmpeg
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.media import ops  # noqa: E402


def make_clip(folder: pathlib.Path, index: int, seconds: float, size: int, fps: int) -> pathlib.Path:
    """A talking-head-sized clip: a moving picture in H.264 (as the engine writes it) plus AAC speech-like audio."""
    rng = np.random.default_rng(index)
    silent = folder / f"silent{index}.mp4"
    with av.open(str(silent), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        yy, xx = np.mgrid[0:size, 0:size]
        base = rng.integers(0, 40, size=(size, size, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            r = size * (0.25 + 0.05 * np.sin(i / 3 + index))
            disk = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) < r * r
            img = base.copy()
            img[disk] = (200, 150 + (i * 3) % 60, 120)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    audio = folder / f"audio{index}.wav"
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    voice = np.sin(2 * np.pi * (140 + 20 * index) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    with av.open(str(audio), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((voice * 12000).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    clip = folder / f"clip{index}.mp4"
    ops.mux(str(silent), str(audio), str(clip))
    return clip


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the result as JSON here (bench/run_all.py)")
    args = parser.parse_args()
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()

    with tempfile.TemporaryDirectory(prefix="bench-concat-") as tmp:
        folder = pathlib.Path(tmp)
        start = time.perf_counter()
        clips = [make_clip(folder, i, args.seconds, args.size, args.fps) for i in range(args.clips)]
        print(f"made {args.clips} clips of {args.seconds:g} s, {args.size}x{args.size} @ {args.fps} fps "
              f"with AAC audio in {time.perf_counter() - start:.1f} s")
        listing = folder / "list.txt"
        listing.write_text("".join(f"file '{c}'\n" for c in clips))

        def copy():
            ops.concat([str(c) for c in clips], str(folder / "copy.mp4"))

        def ffmpeg_copy():
            subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                            "-c", "copy", "-movflags", "+faststart", str(folder / "ffcopy.mp4")], check=True)

        def reencode():
            subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart",
                            str(folder / "reencode.mp4")], check=True)

        results = {
            "copy (ops.concat)": timed(copy, args.repeat),
            "copy (ffmpeg -c copy)": timed(ffmpeg_copy, args.repeat),
            "re-encode (libx264)": timed(reencode, max(1, min(args.repeat, 2))),
        }
        expected = sum(ops.probe(str(c)).duration_seconds for c in clips)
        joined = ops.probe(str(folder / "copy.mp4"))
        for name, times in results.items():
            print(f"{name:24s} median {statistics.median(times):8.3f} s  (runs: {', '.join(f'{t:.3f}' for t in times)})")
        ratio = statistics.median(results["re-encode (libx264)"]) / statistics.median(results["copy (ops.concat)"])
        print(f"re-encode / copy: {ratio:.0f}x  (target >= 10x)")
        print(f"joined duration {joined.duration_seconds:.3f} s, sum of clips {expected:.3f} s")
        if args.json:
            write_json(args, results, ratio, joined.duration_seconds, expected)


def write_json(args, results: dict, ratio: float, joined_s: float, expected_s: float) -> None:
    """The figure as a bench/run_all.py result row, with every run's times."""
    from bench.common import row, write_result

    copy_s = statistics.median(results["copy (ops.concat)"])
    reencode_s = statistics.median(results["re-encode (libx264)"])
    write_result(args.json, "Joining clips", [row(
        "Joining clips", f"concat {args.clips} clips of {args.seconds:g} s by stream copy (ops.concat)", copy_s, "s",
        "ffmpeg re-encode (libx264 + AAC)", reencode_s, "≥ 10× faster", ratio >= 10, ratio=ratio,
        target_ratio=10.0, higher_is_better=True, note=f"{ratio:.0f}× faster")], {
        "clips": args.clips, "seconds_each": args.seconds, "size": args.size, "fps": args.fps,
        "runs_s": {k: [round(t, 4) for t in v] for k, v in results.items()},
        "joined_duration_s": round(joined_s, 3), "sum_of_clips_s": round(expected_s, 3)})


if __name__ == "__main__":
    main()
