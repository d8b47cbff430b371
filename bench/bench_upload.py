"""Benchmark: gateway memory while receiving a 50 MB audio upload.

A real 50 MB WAV (espeak-ng speech resampled to 48 kHz stereo, 16-bit, about 260 s) is POSTed
to `POST /api/v1/synthesis/start` of the gateway of the full local stack (with `duration=1`,
so the job it starts stays small). The gateway process's resident memory is read from
/proc/<pid>/status: VmRSS just before, and the peak during the upload and 1 s after the answer,
both from VmHWM (reset first with clear_refs where allowed) and from VmRSS sampled every 5 ms.

Baseline: the same file POSTed to a plain FastAPI `UploadFile` endpoint that reads it whole
(`await file.read()`, as the source wrappers do), in bench/baseline_echomimic_style.py.

Both servers first take one small upload, so first-request allocations do not count.

    python -m bench.bench_upload [--mb 50] [--json PATH]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time
import urllib.request

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import (ROOT, RssSampler, log, proc_status_kb, reset_peak_rss, row, service_pid, stack,
                          write_portrait, write_result, write_speech)

BENCH = "Uploads"
TARGET_MB = 16.0


def make_wav(path: pathlib.Path, size_bytes: int) -> pathlib.Path:
    """A 48 kHz stereo 16-bit WAV of real speech, `size_bytes` long (44-byte header included)."""
    seconds = (size_bytes - 44) / (48000 * 2 * 2)
    write_speech(path, seconds, rate=48000, channels=2)
    return path


def measure_upload(pid: int, post) -> dict:
    """Run `post()` and report the process's memory around it, in MB."""
    before_kb = proc_status_kb(pid, "VmRSS")
    reset = reset_peak_rss(pid)
    hwm_before_kb = proc_status_kb(pid, "VmHWM")
    with RssSampler(pid) as sampler:
        t0 = time.perf_counter()
        answer = post()
        took = time.perf_counter() - t0
        time.sleep(1.0)
    hwm_kb = proc_status_kb(pid, "VmHWM")
    after_kb = proc_status_kb(pid, "VmRSS")
    peak_kb = max(sampler.peak_kb, hwm_kb if reset else 0)
    return {"rss_before_mb": round(before_kb / 1024, 2), "peak_mb": round(peak_kb / 1024, 2),
            "growth_mb": round((peak_kb - before_kb) / 1024, 2), "rss_after_mb": round(after_kb / 1024, 2),
            "sampled_peak_mb": round(sampler.peak_kb / 1024, 2), "samples": sampler.samples,
            "vmhwm_reset": reset, "vmhwm_before_mb": round(hwm_before_kb / 1024, 2),
            "vmhwm_after_mb": round(hwm_kb / 1024, 2), "upload_s": round(took, 3), "answer": answer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="upload size in MB (10^6 bytes)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import httpx

    from services.stack import free_port

    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        folder = pathlib.Path(tmp)
        portrait = write_portrait(folder / "portrait.png")
        small = write_speech(folder / "small.wav", 2.0)
        big = make_wav(folder / "big.wav", int(args.mb * 1e6))
        size = big.stat().st_size
        log(f"made {big.name}: {size / 1e6:.1f} MB, 48 kHz stereo speech")

        def start(client, audio: pathlib.Path, seed: int) -> dict:
            with open(portrait, "rb") as img, open(audio, "rb") as aud:
                resp = client.post("/api/v1/synthesis/start",
                                   files={"image": ("portrait.png", img, "image/png"),
                                          "audio": (audio.name, aud, "audio/wav")},
                                   data={"emotion": "neutral", "min_resolution": "256", "duration": "1",
                                         "seed": str(seed)})
            resp.raise_for_status()
            return resp.json()

        with stack() as st, httpx.Client(base_url=st.url, timeout=300) as client:
            pid = service_pid(st, "gateway")
            start(client, small, 1)
            gw = measure_upload(pid, lambda: start(client, big, 2))
            log(f"gateway: {gw}")

        port = free_port()
        logf = open(folder / "baseline.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_echomimic_style", "--port", str(port),
                                 "--no-engine"], cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(base_url + "/health", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("the baseline server did not start")
                    time.sleep(0.2)

            def upload(client, path: pathlib.Path) -> dict:
                with open(path, "rb") as fh:
                    resp = client.post("/upload", files={"file": (path.name, fh, "audio/wav")})
                resp.raise_for_status()
                return resp.json()

            with httpx.Client(base_url=base_url, timeout=300) as client:
                upload(client, small)
                base = measure_upload(proc.pid, lambda: upload(client, big))
            log(f"baseline: {base}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    rows = [row(BENCH, f"gateway peak RSS growth, {size / 1e6:.0f} MB WAV upload", gw["growth_mb"], "MB",
                "FastAPI UploadFile + await file.read()", base["growth_mb"],
                f"grows < {TARGET_MB:g} MB", gw["growth_mb"] < TARGET_MB,
                target_ratio=TARGET_MB / base["growth_mb"] if base["growth_mb"] > 0 else None,
                note=f"upload took {gw['upload_s']} s (gateway, incl. store + probe) vs {base['upload_s']} s")]
    write_result(args.json, BENCH, rows, {"upload_bytes": size, "gateway": gw, "baseline": base})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
