"""Helpers the benchmarks share: inputs, result rows, process memory and CPU, the DICE-Talk client."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time
import wave
from typing import Iterator

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPEECH_TEXT = ("The quick brown fox jumps over the lazy dog. Many people were waiting patiently at "
               "the station for the morning train, which was late again. She sells sea shells by the "
               "sea shore, and the shells she sells are surely sea shells. ")


def log(message: str) -> None:
    """Progress lines go to stderr; stdout is left for the summary."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- inputs -------------------------------------------------------------------------------------

def speech_samples(seconds: float, rate: int | None = None) -> tuple[np.ndarray, int]:
    """About `seconds` of real espeak-ng speech (with pauses) as int16 mono, resampled to `rate`."""
    from libs.speech import synthesize

    sp = synthesize(SPEECH_TEXT, voice="en")
    src_rate = sp.sample_rate
    pause = np.zeros(int(0.4 * src_rate), np.int16)
    one = np.concatenate([np.asarray(sp.samples, np.int16), pause])
    need = int(seconds * src_rate)
    pcm = np.tile(one, need // len(one) + 1)[:need]
    if rate and rate != src_rate:
        n = int(round(len(pcm) * rate / src_rate))
        pcm = np.interp(np.linspace(0, len(pcm) - 1, n), np.arange(len(pcm)), pcm).astype(np.int16)
        src_rate = rate
    return pcm, src_rate


def write_speech(path: pathlib.Path, seconds: float, rate: int | None = None, channels: int = 1) -> pathlib.Path:
    """A 16-bit PCM WAV of real speech; stereo repeats the speech in both channels."""
    pcm, rate = speech_samples(seconds, rate)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def write_portrait(path: pathlib.Path) -> pathlib.Path:
    """scikit-image's astronaut, 512x512 (the portrait of `talkserve demo`)."""
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(path)
    return path


# -- results ------------------------------------------------------------------------------------

def row(benchmark: str, figure: str, value: float, unit: str, baseline: str, baseline_value: float,
        target: str, passed: bool | None, *, target_ratio: float | None = None,
        higher_is_better: bool = False, ratio: float | None = None, note: str = "") -> dict:
    """One line of the results table. `ratio` defaults to value / baseline_value; `target_ratio`
    is the target expressed as a ratio against the same baseline (for the chart)."""
    if ratio is None:
        ratio = value / baseline_value if baseline_value else None
    return {
        "benchmark": benchmark, "figure": figure, "value": _round(value), "unit": unit,
        "baseline": baseline, "baseline_value": _round(baseline_value),
        "ratio": _round(ratio, 4), "target": target, "target_ratio": _round(target_ratio, 4),
        "higher_is_better": higher_is_better, "pass": passed, "note": note,
    }


def _round(x, digits: int = 4):
    if x is None or isinstance(x, str):
        return x
    x = float(x)
    if not np.isfinite(x):
        return None
    return round(x, digits)


def write_result(path: str | None, benchmark: str, rows: list[dict], details: dict) -> dict:
    """Print the rows and, with --json PATH, write {benchmark, rows, details, load}."""
    result = {"benchmark": benchmark, "rows": rows, "details": details,
              "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    for r in rows:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[r["pass"]]
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3g}"
        print(f"{benchmark} | {r['figure']}: {r['value']} {r['unit']} | baseline {r['baseline']}: "
              f"{r['baseline_value']} {r['unit']} | ratio {ratio} | target {r['target']} | {verdict}")
    if path:
        pathlib.Path(path).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result


def median(xs) -> float:
    return float(statistics.median(xs))


# -- processes ----------------------------------------------------------------------------------

def proc_status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def family(pid: int) -> list[int]:
    """`pid` and its live descendants (a model service's phone recogniser, say)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in family(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds on a thread; `.peak_kb` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
                self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} CPUs"


# -- the local stack and the DICE-Talk API ------------------------------------------------------

@contextlib.contextmanager
def stack(replicas: dict[str, int] | None = None, extra_env: dict[str, str] | None = None,
          grace: float = 10.0) -> Iterator["object"]:
    """The real local stack (SeaweedFS, media, model services, gateway) on free ports, in a temp dir."""
    from services.stack import Stack, free_port

    env = {"TALKSERVE_LOG_LEVEL": "WARNING", **(extra_env or {})}
    with tempfile.TemporaryDirectory(prefix="talkserve-bench-") as tmp:
        st = Stack(pathlib.Path(tmp), gateway_ports=[free_port()], replicas=replicas or {}, extra_env=env)
        started = time.monotonic()
        try:
            st.start()
        except BaseException:
            for f in sorted((pathlib.Path(tmp) / "logs").glob("*.log")):
                tail = f.read_text(errors="replace").splitlines()[-15:]
                log(f"--- {f.name} (last lines) ---\n" + "\n".join(tail))
            raise
        log(f"stack up in {time.monotonic() - started:.1f} s at {st.url}")
        try:
            yield st
        finally:
            st.stop(grace=grace)


def submit(client, portrait: pathlib.Path, speech: pathlib.Path, seed: int, min_resolution: int = 512,
           fps: int = 24, emotion: str = "happy", **extra) -> str:
    """POST /api/v1/synthesis/start; returns the task id. Distinct seeds keep the result cache out."""
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = client.post("/api/v1/synthesis/start",
                           files={"image": ("portrait.png", img, "image/png"),
                                  "audio": (speech.name, aud, "audio/wav")},
                           data={"emotion": emotion, "min_resolution": str(min_resolution), "fps": str(fps),
                                 "seed": str(seed), **{k: str(v) for k, v in extra.items()}})
    resp.raise_for_status()
    return resp.json()["task_id"]


def status(client, task_id: str) -> dict:
    resp = client.get(f"/api/v1/synthesis/{task_id}/status")
    resp.raise_for_status()
    return resp.json()


def wait_done(client, task_id: str, poll: float = 0.1, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(client, task_id)
        if st["status"] in ("COMPLETED", "FAILED"):
            if st["status"] != "COMPLETED":
                raise RuntimeError(f"task {task_id} failed: {st['message']}")
            return st
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} not done after {timeout:.0f} s")
        time.sleep(poll)


def download(client, task_id: str, out: pathlib.Path) -> int:
    size = 0
    with client.stream("GET", f"/api/v1/synthesis/{task_id}/download") as resp, open(out, "wb") as fh:
        resp.raise_for_status()
        for chunk in resp.iter_bytes():
            fh.write(chunk)
            size += len(chunk)
    return size


def service_pid(st, name: str) -> int:
    return st.service(name).proc.pid
