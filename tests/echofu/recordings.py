"""Spoken questions as browsers and phones record them: espeak-ng speech encoded by PyAV.

The EchOfU chat page records WebM/Opus and uploads it named `input.wav`; phones send
MP4/AAC, other recorders Ogg or plain WAV. `record` writes one of these, whatever the
file's name, so tests can check that audio is told apart by its content.
"""

from __future__ import annotations

import pathlib
from fractions import Fraction

import av
import numpy as np

from libs.speech.espeak import synthesize

# The question of the issue (EchOfU chat, recorded by the page) and the voice the chat tests speak it in.
CHAT_QUESTION = "Hello there, this is test 47."
CHAT_VOICE = "en-us+klatt4"

# container -> (PyAV format, codec, sample rate, layout, codec options). FFmpeg's own Vorbis
# encoder is marked experimental and writes stereo only, which also checks the downmix.
CONTAINERS = {
    "webm-opus": ("webm", "libopus", 48000, "mono", {}),
    "mp4-aac": ("mp4", "aac", 44100, "mono", {}),
    "ogg-vorbis": ("ogg", "vorbis", 44100, "stereo", {"strict": "experimental"}),
    "wav": ("wav", "pcm_s16le", 22050, "mono", {}),
}
# What PyAV reports reading each back: (format name, codec name).
DECODED_AS = {"webm-opus": ("matroska,webm", "opus"), "mp4-aac": ("mov,mp4,m4a,3gp,3g2,mj2", "aac"),
              "ogg-vorbis": ("ogg", "vorbis"), "wav": ("wav", "pcm_s16le")}


def record(path: pathlib.Path, container: str, text: str = CHAT_QUESTION, voice: str = CHAT_VOICE) -> pathlib.Path:
    """Speak `text` with espeak-ng and encode it into `container` (a CONTAINERS key) at `path`."""
    fmt, codec, rate, layout, options = CONTAINERS[container]
    speech = synthesize(text, voice=voice)
    frame = av.AudioFrame.from_ndarray(np.asarray(speech.samples, np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = speech.sample_rate
    frame.time_base = Fraction(1, speech.sample_rate)
    frame.pts = 0
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=rate)
        for piece in resampler.resample(frame) + resampler.resample(None):
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    return path


def decoded_as(path: pathlib.Path) -> tuple[str, str]:
    """(container format, audio codec) that PyAV finds in the file, by its content."""
    with av.open(str(path)) as c:
        return c.format.name, c.streams.audio[0].codec_context.name
