"""Benchmark talkface's torch render path against its numba path, side by side in one run.

On the CPU: the same portrait job (10 s of espeak-ng speech, 512x512, 24 fps, the astronaut
cropped to the face, as bench_engine.py) rendered by `Engine()` (numba, the default) and by
`Engine(render_device="cpu")` (torch), alternately, each warm; the wall time of `generate`
(speech analysis, render and libx264 encoding on the engine's 2 threads, as a replica runs it),
its real-time factor, and the render alone per frame (CPU time, no encoder).

On a GPU (when torch sees one): for 512 and 1024 px, one job's real-time factor on the GPU
(NVENC where it opens, else libx264) and jobs per second with several jobs at once (one engine
per job, as a replica's slots), each figure naming the GPU. Without a GPU these figures are not
measured, and the result says so.

    python -m bench.bench_torch [--seconds 10] [--size 512] [--rounds 2] [--batch 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, load_note, log, row, write_portrait, write_result, write_speech  # noqa: E402


def _job(portrait, wav, out, size, **kw):
    from libs.talkface.api import PortraitJob

    return PortraitJob(image_path=str(portrait), audio_path=str(wav), out_path=str(out), width=size, height=size,
                       crop=True, fps=24, emotion="happy", emo_scale=6, **kw)


def render_only_ms(engine, portrait, wav, size: int, frames: int, batch: int, device) -> float:
    """CPU milliseconds per frame of the render alone (no speech analysis, no encoder): the
    job's own warper, mouth and motion plan, rendered by numba (device None) or torch."""
    from libs.talkface import motion as M
    from libs.talkface import render as R
    from libs.talkface.api import MouthTrack
    from libs.talkface.engine import _NumbaFrames
    from libs.talkface.mouth import MouthInterior

    img, rest, box = engine.prepare_portrait(_job(portrait, wav, "unused.mp4", size))
    fields = M.ActionFields(rest)
    interior = MouthInterior(img, rest, fields.frame.height, yaw_sin=fields.yaw_sin)
    t = np.arange(frames) / 24.0
    track = MouthTrack(0.5 + 0.5 * np.sin(7 * t), 0.3 * np.sin(3 * t), np.zeros(frames), np.ones(frames), 24.0)
    plan = M.plan_motion(rest, track, frames, fields=fields)
    warper = R.Warper(img, rest)
    if device is None:
        frames_of = _NumbaFrames(warper, interior)
    else:
        from libs.talkface.torch_render import TorchFrames

        frames_of = TorchFrames(warper, interior, device, batch)
    step = frames_of.batch
    chunks = []
    for start in range(0, frames, step):
        chunk = range(start, min(frames, start + step))
        pts = np.stack([warper.clamp(plan.points(i)) for i in chunk])
        skulls, mandibles = (np.stack(x) for x in zip(*(plan.teeth_transforms(i) for i in chunk)))
        chunks.append((start, pts, skulls, mandibles))
    frames_of.render(*chunks[0])  # warm
    t0 = time.thread_time()
    for c in chunks:
        frames_of.render(*c)
    return (time.thread_time() - t0) / frames * 1000.0


def cpu_side_by_side(tmp: pathlib.Path, seconds: float, size: int, rounds: int, batch: int) -> dict:
    """The numba and the torch path on the CPU, alternately, each warm; the best of `rounds`."""
    from libs.talkface.engine import Engine

    portrait = write_portrait(tmp / "portrait.png")
    wav = write_speech(tmp / "speech.wav", seconds)
    engines = {"numba": Engine(), "torch": Engine(render_device="cpu", batch=batch)}
    for name, engine in engines.items():  # model load, recogniser, first-call costs: a service is warm
        engine.generate(_job(portrait, wav, tmp / f"warm-{name}.mp4", size, max_frames=12))
    runs = {name: [] for name in engines}
    cpus = {name: [] for name in engines}
    extra = {}
    for r in range(rounds):
        for name, engine in engines.items():
            cpu0, t0 = cpu_seconds(os.getpid()), time.perf_counter()
            result = engine.generate(_job(portrait, wav, tmp / f"{name}.mp4", size))
            runs[name].append(time.perf_counter() - t0)
            cpus[name].append(cpu_seconds(os.getpid()) - cpu0)
            extra[name] = result.extra
            log(f"round {r + 1}: {name} {runs[name][-1]:.2f} s for {result.frames} frames")
    frames = result.frames
    render_ms = {name: round(render_only_ms(engine, portrait, wav, size, 96, batch,
                                            None if name == "numba" else "cpu"), 2)
                 for name, engine in engines.items()}
    import torch

    return {
        "seconds": seconds, "size": size, "frames": frames, "batch": batch,
        "generate_s": {name: round(min(v), 3) for name, v in runs.items()},
        "generate_runs_s": {name: [round(x, 3) for x in v] for name, v in runs.items()},
        "generate_cpu_s": {name: round(statistics.median(v), 3) for name, v in cpus.items()},
        "render_only_cpu_ms_per_frame": render_ms,
        "extra": {name: {k: v for k, v in e.items() if k in ("render", "render_device", "batch", "encoder",
                                                              "encoder_threads")} for name, e in extra.items()},
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cpu": _cpu_name(), "load": load_note(),
    }


def gpu_figures(tmp: pathlib.Path, seconds: float, sizes: list, concurrent: list, batch: int) -> dict:
    """RTF of one job and jobs/s with several at once, per size, on the GPU torch sees."""
    import torch

    from libs.engines.talkface import TalkfaceEngine
    from libs.engines.protocol import EngineOptions

    portrait = write_portrait(tmp / "portrait.png")
    wav = write_speech(tmp / "speech.wav", seconds)
    device = torch.cuda.get_device_name()
    cores = os.cpu_count() or 2
    out = {"device": device, "cores": cores, "sizes": {}}

    def engines(k):
        # the machine's cores shared by k slots: each engine's encoder (libx264 where NVENC
        # does not open: an H100 has none) gets its share
        return [TalkfaceEngine(EngineOptions(device="cuda", batch_size=batch, threads=max(2, cores // k)))
                for _ in range(k)]

    pools = {k: engines(k) for k in sorted({1, *concurrent})}
    for size in sizes:
        for pool in pools.values():
            for engine in pool:
                engine.generate(_job(portrait, wav, tmp / "warm.mp4", size, max_frames=48))
        t0 = time.perf_counter()
        result = pools[1][0].generate(_job(portrait, wav, tmp / "one.mp4", size))
        one = time.perf_counter() - t0
        per = {"one_job_s": round(one, 3), "rtf": round(one / seconds, 4), "frames": result.frames,
               "encoder": result.extra.get("encoder"), "encoder_choice": result.extra.get("encoder_choice"),
               "encoder_threads": result.extra.get("encoder_threads")}
        for k in concurrent:
            errors = []
            pool = pools[k]

            def run(i):
                try:
                    pool[i].generate(_job(portrait, wav, tmp / f"c{i}.mp4", size, seed=i))
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(repr(exc))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(k)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            span = time.perf_counter() - t0
            per[f"jobs_per_s_{k}_at_once"] = round(k / span, 3)
            if errors:
                per[f"errors_{k}_at_once"] = errors
        out["sizes"][size] = per
        log(f"{device} {size} px: {per}")
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="frames per torch pass on the CPU")
    ap.add_argument("--gpu-batch", type=int, default=32, help="frames per torch pass on a GPU")
    ap.add_argument("--gpu-sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--gpu-jobs", type=int, nargs="+", default=[4, 8], help="jobs at once for jobs/s")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    with tempfile.TemporaryDirectory(prefix="bench-torch-") as tmp:
        cpu = cpu_side_by_side(pathlib.Path(tmp), args.seconds, args.size, args.rounds, args.batch)
        gpu = None
        if torch.cuda.is_available():
            gpu = gpu_figures(pathlib.Path(tmp), args.seconds, args.gpu_sizes, args.gpu_jobs, args.gpu_batch)
    s, size = args.seconds, args.size
    numba_s, torch_s = cpu["generate_s"]["numba"], cpu["generate_s"]["torch"]
    on = f"{cpu['cpu']}, {os.cpu_count()} cores"
    rows = [
        row("Torch render", f"talkface on torch, CPU ({on}): {s:g} s of speech, {size}×{size}, RTF {torch_s / s:.3f}",
            torch_s, "s", f"the numba path in the same run (RTF {numba_s / s:.3f})", numba_s,
            "none on the CPU (numba stays the default there)", None,
            note=f"best of {args.rounds} alternating runs each, encoder libx264 on 1 thread beside a 1-thread "
                 f"render; the render alone {cpu['render_only_cpu_ms_per_frame']['torch']} vs "
                 f"{cpu['render_only_cpu_ms_per_frame']['numba']} ms of CPU a frame; torch {cpu['torch']}, "
                 f"batch {args.batch}; {cpu['load']}"),
    ]
    if gpu is None:
        rows.append(row("Torch render", "talkface on a GPU: RTF and jobs/s at 512 and 1024 px", None, "s",
                        "no GPU in this run", None, "RTF ≤ 0.05 (20× real time) at 512 px on an H100", None,
                        note="torch sees no CUDA GPU here: the GPU figures were not measured"))
    else:
        for size_px, per in gpu["sizes"].items():
            rows.append(row("Torch render", f"talkface on {gpu['device']}, one job, {s:g} s of speech, "
                            f"{size_px}×{size_px}, RTF", per["one_job_s"], "s", "length of the speech", s,
                            "RTF ≤ 0.05 (20× real time)" if size_px == 512 else "—",
                            per["rtf"] <= 0.05 if size_px == 512 else None,
                            target_ratio=0.05 if size_px == 512 else None,
                            note=f"encoder {per['encoder']} ({per['encoder_choice']})"))
            for k in args.gpu_jobs:
                rate = per.get(f"jobs_per_s_{k}_at_once")
                rows.append(row("Torch render", f"talkface on {gpu['device']}, {k} jobs at once, {size_px}×{size_px}: "
                                "jobs/s per GPU", rate, "jobs/s", "one job at a time", 1.0 / per["one_job_s"],
                                "more than one job at a time", rate > 1.0 / per["one_job_s"], higher_is_better=True,
                                note="; ".join(per.get(f"errors_{k}_at_once", []))))
    details = {"cpu": cpu, "gpu": gpu or "no GPU in this run: torch.cuda.is_available() is false"}
    write_result(args.json, "Torch render", rows, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
