"""A tiny torch engine for the engine-contract tests, loaded the way an adapter for upstream
weights would be: from an entry point, with weights from a directory, on the chosen device.

The "model" mixes the portrait's colours with a 1x1 convolution and brightens each frame by
the loudness of its speech, so the weights the test wrote show in every output pixel. It runs
portrait jobs only, in batches of frames, and checks for cancellation before every batch.
Not a talking head: it proves the plumbing, and its results name it, never talkface.
"""

from __future__ import annotations

import pathlib
import time
import wave

import cv2
import numpy as np
import torch

from libs.engines.device import torch_device
from libs.engines.protocol import (
    PORTRAIT,
    BadAudioError,
    BadImageError,
    Cancelled,
    EngineConfigError,
    EngineOptions,
    Progress,
    RenderResult,
    UnsupportedJob,
)
from libs.talkface.encode import VideoWriter

NAME = "tinytorch-test-1"
WEIGHTS_FILE = "tiny.pt"


class TinyNet(torch.nn.Module):
    """Frame = clamp(mix(portrait) + gain * loudness)."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 3, kernel_size=1)
        self.gain = torch.nn.Parameter(torch.zeros(1))

    def forward(self, portrait: torch.Tensor, loudness: torch.Tensor) -> torch.Tensor:
        # portrait (1, 3, H, W) in 0..1, loudness (B,) in 0..1 -> frames (B, 3, H, W)
        return (self.mix(portrait) + self.gain * loudness.view(-1, 1, 1, 1)).clamp(0, 1)


def write_weights(weights_dir: pathlib.Path, mix: np.ndarray, gain: float) -> pathlib.Path:
    """Save TinyNet weights (a 3x3 colour matrix, no bias, a loudness gain) as a checkpoint."""
    net = TinyNet()
    with torch.no_grad():
        net.mix.weight.copy_(torch.as_tensor(mix, dtype=torch.float32).view(3, 3, 1, 1))
        net.mix.bias.zero_()
        net.gain.fill_(gain)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / WEIGHTS_FILE
    torch.save(net.state_dict(), path)
    return path


def _loudness(path: str, fps: float, frames: int | None) -> np.ndarray:
    """RMS of each video frame's slice of a 16-bit PCM WAV (what the media service hands a model service), 0..1."""
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                raise BadAudioError("the speech must be 16-bit PCM WAV")
            rate, channels = w.getframerate(), w.getnchannels()
            samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    except (wave.Error, EOFError) as exc:
        raise BadAudioError(f"the speech could not be read: {exc}") from None
    samples = samples.reshape(-1, channels).mean(axis=1)
    n = frames or max(1, int(round(len(samples) / rate * fps)))
    hop = rate / fps
    rms = np.zeros(n, np.float32)
    for i in range(n):
        part = samples[int(i * hop):int((i + 1) * hop)]  # empty past the end of the speech: silence
        if part.size:
            rms[i] = np.sqrt(np.mean(part ** 2))
    return rms / rms.max() if rms.max() > 0 else rms


class TinyTorchEngine:
    """One slot's engine: TinyNet on the options' device, batch_size frames at a time."""

    name = NAME
    jobs = frozenset({PORTRAIT})
    person_files = ()

    def __init__(self, options: EngineOptions):
        if not options.weights_dir:
            raise EngineConfigError(f"{NAME} needs a weights directory holding {WEIGHTS_FILE}")
        weights = pathlib.Path(options.weights_dir) / WEIGHTS_FILE
        if not weights.is_file():
            raise EngineConfigError(f"no {WEIGHTS_FILE} in {options.weights_dir}")
        self.torch_device, self.device = torch_device(options.device)
        # half precision only where it is fast and supported: on a GPU
        self.dtype = torch.float16 if options.fp16 and self.device.gpu else torch.float32
        net = TinyNet()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.net = net.to(self.torch_device, self.dtype).eval()
        self.batch_size = options.batch_size
        # an engine option, for tests that cancel a job while it runs
        self.pause = float(options.extra.get("seconds_per_batch", 0))
        self.batches: list[int] = []  # frames of every batch run, for the tests

    def generate(self, job, progress=None, should_stop=None) -> RenderResult:
        image = cv2.imread(job.image_path, cv2.IMREAD_COLOR)
        if image is None:
            raise BadImageError("the portrait could not be decoded as an image")
        w = (job.width or job.min_resolution) // 2 * 2
        h = (job.height or job.min_resolution) // 2 * 2
        rgb = cv2.cvtColor(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        fps = float(job.fps)
        frames = round(job.duration * fps) if job.duration else None
        if job.max_frames:
            frames = min(frames or job.max_frames, job.max_frames)
        loudness = _loudness(job.audio_path, fps, frames)
        n = len(loudness)
        portrait = torch.as_tensor(rgb, device=self.torch_device).permute(2, 0, 1)[None].to(self.dtype) / 255
        with torch.inference_mode(), VideoWriter(job.out_path, w, h, fps) as out:
            for start in range(0, n, self.batch_size):
                if should_stop is not None and should_stop():
                    raise Cancelled("the job was cancelled")
                batch = torch.as_tensor(loudness[start:start + self.batch_size], device=self.torch_device)
                rendered = self.net(portrait, batch.to(self.dtype))
                pixels = (rendered * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                for frame in pixels:
                    out.write(np.ascontiguousarray(frame))
                self.batches.append(len(pixels))
                if progress is not None:
                    progress(Progress("render", start + len(pixels), n))
                if self.pause:
                    time.sleep(self.pause)
        return RenderResult(frames=n, fps=fps, width=w, height=h, duration_s=n / fps, engine=self.name,
                            extra={"device": self.device.name, "batch_size": self.batch_size,
                                   "fp16": self.dtype == torch.float16})

    def redub(self, job, progress=None, should_stop=None):
        raise UnsupportedJob(f"{NAME} runs portrait jobs only")

    train_person = generate_person = redub


def create(options: EngineOptions) -> TinyTorchEngine:
    """The entry point (registered by the tests, never by talkserve's own metadata)."""
    return TinyTorchEngine(options)
