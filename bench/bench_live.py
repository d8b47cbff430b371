"""Benchmark live sessions (the Live RPC) on this machine: reaction time, audio-to-mouth offset,
sustained frame rate, and sessions a replica holds per core.

One echomimic replica runs in its own process (SeaweedFS beside it holds the portrait); the
clients here send 16 kHz PCM16 in 40 ms chunks paced in real time, as a microphone would, and
stamp every frame they receive. Everything is measured on the frames received, decoded and run
through FaceMesh (analysis.measure_face), never from the engine's own numbers:

- reaction: from sending the chunk where speech starts (after a silence) to receiving the first
  frame whose measured mouth opening leaves the rest shape; the first utterance, and the median
  and worst over every utterance of the run (target < 300 ms);
- audio-to-mouth offset: the shift of the sent audio's loudness envelope (10 ms steps) that best
  correlates with the measured opening on the frames' audio-clock timestamps; positive: the
  mouth trails the sound (target within +45 / -125 ms, ITU-R BT.1359);
- sustained rate at 512 px / 25 fps: frames received per second of session, frames missing
  from the index sequence (drops), and the delay of each frame after its audio (and look-ahead)
  was sent, first and last seconds side by side (a replica that cannot keep up shows a delay
  that grows);
- sessions per replica: 1, 2, 3, ... paced sessions at once on a replica with that many live
  slots, until one's p95 frame delay passes 300 ms or its delay grows; sessions per core is the
  most that held, over the machine's cores.

    python -m bench.bench_live [--seconds 12] [--size 512] [--max-sessions 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, load_note, log, row, speech_samples, write_result  # noqa: E402

FPS = 25
CHUNK = 640  # 40 ms at 16 kHz
LEAD_S = 1.0  # silence before the speech: the rest shape, and a clean first onset


class Session:
    """One paced client: sends audio in real time on a thread, stamps each frame it receives."""

    def __init__(self, target: str, audio: np.ndarray, size: int, keep: bool):
        import grpc

        from libs.grpcutil.live_client import LiveCall, open_request

        self.audio, self.keep = audio, keep
        self.channel = grpc.insecure_channel(target)
        self.call = LiveCall(self.channel, open_request("portrait.png", width=size, height=size, fps=FPS),
                             timeout=600)
        self.sent: list[float] = []  # wall time each chunk was sent
        self.frames: list[tuple[int, float, float, bytes]] = []  # (index, pts, received at, data)
        self.started = None
        self.error: Exception | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        try:
            for reply in self.call:
                now = time.perf_counter()
                if reply.WhichOneof("event") == "started":
                    self.started = reply.started
                    continue
                f = reply.frame
                self.frames.append((f.index, f.pts_seconds, now, f.data if self.keep else b""))
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            self.error = exc

    def run(self) -> None:
        from libs.grpcutil.live_client import pcm16

        self._reader.start()
        while self.started is None and self.error is None:
            time.sleep(0.005)
        t0 = time.perf_counter()
        for k, at in enumerate(range(0, self.audio.size, CHUNK)):
            wait = t0 + k * CHUNK / 16000 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self.sent.append(time.perf_counter())
            self.call.send(pcm16(self.audio[at:at + CHUNK]))
        self.call.close()
        self._reader.join(timeout=60)
        self.channel.close()

    def sent_at(self, seconds: float) -> float:
        """Wall time the chunk holding audio-clock time `seconds` was sent."""
        k = min(len(self.sent) - 1, int(seconds * 16000) // CHUNK)
        return self.sent[k]

    def delays(self, lookahead: float) -> np.ndarray:
        """Per frame: seconds from sending its audio's end plus the look-ahead to receiving it."""
        out = []
        for _, pts, received, _ in self.frames:
            due = pts + 1.0 / FPS + lookahead
            if due * 16000 <= self.audio.size:
                out.append(received - self.sent_at(due - 1e-6))
        return np.array(out)


def start_replica(tmp: pathlib.Path, slots: int):
    """SeaweedFS with the portrait, and one echomimic replica with `slots` live slots (a process)."""
    from libs.store.client import ObjectStore
    from libs.store.seaweed import SeaweedServer
    from services.stack import free_port, store_env, wait_grpc_serving
    from tests import realdata

    seaweed = SeaweedServer(tmp / f"store-{slots}")
    seaweed.start()
    ObjectStore(seaweed.settings).ensure_bucket()
    ObjectStore(seaweed.settings).put_file("portrait.png", str(realdata.photo("grace_hopper")))
    port = free_port()
    env = {**os.environ, **store_env(seaweed.settings), "TALKSERVE_ECHOMIMIC_PORT": str(port),
           "TALKSERVE_ECHOMIMIC_SLOTS": "1", "TALKSERVE_ECHOMIMIC_LIVE_SLOTS": str(slots),
           "TALKSERVE_LOG_LEVEL": "WARNING", "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "gen")])}
    proc = subprocess.Popen([sys.executable, "-m", "services.echomimic"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    wait_grpc_serving(target, 180, proc)
    return seaweed, proc, target


def measure_openings(s: Session, size: int) -> np.ndarray:
    from libs.talkface import analysis
    from libs.talkface.face import FaceAnalyzer
    from libs.talkface.live import i420_to_rgb

    face = FaceAnalyzer()
    out = []
    for _, _, _, data in s.frames:
        try:
            out.append(analysis.measure_face(face.landmarks(i420_to_rgb(data, size, size))).opening)
        except Exception:  # noqa: BLE001 - no face found on the frame
            out.append(np.nan)
    return np.array(out)


def onsets(audio: np.ndarray) -> list[float]:
    """Audio-clock times (s) where speech starts after at least 300 ms of silence."""
    step = 160
    rms = np.sqrt(np.array([np.mean(audio[i:i + step] ** 2) for i in range(0, audio.size - step, step)]))
    loud = rms > 0.02 * rms.max()
    out, quiet = [], 30
    for i, on in enumerate(loud):
        if on and quiet >= 30:
            out.append(i * step / 16000)
        quiet = 0 if on else quiet + 1
    return out


def reaction_times(s: Session, opening: np.ndarray, audio: np.ndarray) -> list[float]:
    """Per utterance: seconds from sending its first chunk to receiving the first frame whose
    measured opening leaves the rest shape (rest: the lead silence's frames)."""
    pts = np.array([f[1] for f in s.frames])
    received = np.array([f[2] for f in s.frames])
    rest = opening[pts < LEAD_S - 0.2]
    base = float(np.nanmedian(rest))
    spread = float(np.nanpercentile(opening, 95)) - base
    threshold = base + max(0.15 * spread, 3 * float(np.nanstd(rest)) + 1e-3)
    out = []
    for t in onsets(audio):
        after = np.flatnonzero((pts >= t - 1.0 / FPS) & (pts < t + 0.5) & (opening > threshold))
        if after.size:
            out.append(float(received[after[0]] - s.sent_at(t)))
    return out


def offset_ms(opening: np.ndarray, s: Session, audio: np.ndarray) -> tuple[float, float]:
    """(offset in ms, its correlation): the audio shift that best matches the measured opening."""
    from libs.talkface import analysis

    pts = np.array([f[1] for f in s.frames])
    n = int(pts.size)
    best = (-1.0, 0.0)
    for shift_ms in range(-200, 201, 10):
        k = int(shift_ms * 16)
        shifted = np.concatenate([np.zeros(k, np.float32), audio])[:audio.size] if k >= 0 else \
            np.concatenate([audio[-k:], np.zeros(-k, np.float32)])
        loud = analysis.audio_loudness(shifted, FPS, n)
        ok = ~np.isnan(opening)
        r = float(np.corrcoef(opening[ok], loud[ok])[0, 1])
        if r > best[0]:
            best = (r, float(shift_ms))
    return best[1], best[0]


def run_sessions(target: str, count: int, audio: np.ndarray, size: int, keep: bool) -> list[Session]:
    sessions = [Session(target, audio, size, keep and i == 0) for i in range(count)]
    threads = [threading.Thread(target=s.run) for s in sessions]
    for t in threads:
        t.start()
        time.sleep(0.013)  # not all chunks on the same tick
    for t in threads:
        t.join()
    return sessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="speech per session")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    pcm, _ = speech_samples(args.seconds, 16000)
    speech = pcm.astype(np.float32) / 32768.0
    audio = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), speech, np.zeros(8000, np.float32)])
    cores = os.cpu_count() or 1
    rows, details = [], {"load_before": load_note(), "cores": cores, "size": args.size, "fps": FPS,
                         "speech_seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="talkserve-bench-live-") as tmp:
        seaweed, proc, target = start_replica(pathlib.Path(tmp), args.max_sessions)
        try:
            log(f"one session, {args.size} px, {FPS} fps, {audio.size / 16000:.1f} s paced in real time")
            cpu0, w0 = cpu_seconds(proc.pid), time.perf_counter()
            (one,) = run_sessions(target, 1, audio, args.size, keep=True)
            cpu_one = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - w0)
            if one.error:
                raise one.error
            lookahead = one.started.lookahead_seconds
            log(f"{len(one.frames)} frames; measuring the mouth on them")
            opening = measure_openings(one, args.size)
            reactions = reaction_times(one, opening, audio)
            offset, r = offset_ms(opening, one, audio)
            indices = [f[0] for f in one.frames]
            drops = (indices[-1] + 1 - len(indices)) if indices else 0
            span = one.frames[-1][2] - one.frames[0][2]
            rate = (len(one.frames) - 1) / span if span > 0 else 0.0
            d = one.delays(lookahead)
            first_s, last_s = d[:FPS], d[-FPS:]
            details.update(reactions_s=[round(x, 3) for x in reactions], offset_r=round(r, 3),
                           lookahead_s=lookahead, frames=len(one.frames), replica_cpu_cores_one_session=round(cpu_one, 3),
                           frame_delay_ms_p50=round(1000 * float(np.median(d)), 1),
                           frame_delay_ms_p95=round(1000 * float(np.percentile(d, 95)), 1))
            first = reactions[0] if reactions else float("nan")
            rows += [
                row("Live", "first reacting frame after the first speech chunk", first * 1000, "ms",
                    "target", 300, "< 300 ms", bool(first < 0.3)),
                row("Live", "reaction, median over utterances", float(np.median(reactions)) * 1000, "ms",
                    "target", 300, "< 300 ms", bool(np.median(reactions) < 0.3),
                    note=f"worst {max(reactions) * 1000:.0f} ms over {len(reactions)} utterances"),
                row("Live", "audio-to-mouth offset (+: mouth trails)", offset, "ms", "detectability window", 45,
                    "within +45 / -125 ms", bool(-125 <= offset <= 45), note=f"r = {r:.2f} at that shift"),
                row("Live", f"sustained frame rate, {args.size} px", rate, "fps", "requested", FPS,
                    f"{FPS} fps, no drops", bool(rate >= FPS * 0.97 and drops == 0), higher_is_better=True,
                    note=f"{drops} dropped; frame delay p95 {details['frame_delay_ms_p95']} ms"),
                row("Live", "frame delay, last second vs first", float(np.median(last_s)) * 1000, "ms",
                    "first second", float(np.median(first_s)) * 1000, "no growth (< +50 ms)",
                    bool(np.median(last_s) - np.median(first_s) < 0.05)),
            ]
            held = 0
            for count in range(2, args.max_sessions + 1):
                log(f"{count} sessions at once")
                sessions = run_sessions(target, count, audio[:int(8 * 16000)], args.size, keep=False)
                ok = True
                worst = 0.0
                for s in sessions:
                    if s.error:
                        ok = False
                        continue
                    dd = s.delays(lookahead)
                    p95 = float(np.percentile(dd, 95))
                    worst = max(worst, p95)
                    grows = float(np.median(dd[-FPS:]) - np.median(dd[:FPS]))
                    ok = ok and p95 < 0.3 and grows < 0.05 and len(s.frames) >= 0.97 * 8 * FPS - 5
                details[f"sessions_{count}_worst_delay_p95_ms"] = round(worst * 1000, 1)
                log(f"  worst p95 frame delay {worst * 1000:.0f} ms: {'held' if ok else 'did not hold'}")
                if not ok:
                    break
                held = count
            held = max(held, 1 if first_s.size and np.percentile(d, 95) < 0.3 else 0)
            rows.append(row("Live", "sessions per replica per core", held / cores, "sessions/core",
                            "one session's CPU", 1.0 / max(cpu_one, 1e-3) / cores, "n/a", None,
                            higher_is_better=True,
                            note=f"{held} sessions held on {cores} cores (p95 frame delay < 300 ms, no growth); "
                                 f"one session used {cpu_one:.2f} cores of the replica"))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            seaweed.stop()
    details["load_after"] = load_note()
    write_result(args.json, "live", rows, details)


if __name__ == "__main__":
    main()
