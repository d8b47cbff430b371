"""Speech that is still arriving to mouth motion: the file jobs' mouth track, computed as audio comes in.

A live session cannot wait for the whole speech. `LiveMouth` takes 16 kHz samples as they
arrive and gives the mouth track (open, width, press, F/V, loudness) of every video frame
whose audio, plus a short look-ahead (LOOKAHEAD_S), is in. It is the same computation as
audio.py's, on a sliding window instead of the whole clip:

- the 10 ms features (loudness, formant-band proxies, murmur, burst tilt) of the window;
- loudness against a running speaking level (the last HISTORY_S of speech) instead of the
  whole clip's, so a quiet speaker still opens the mouth and silence stays closed;
- phones from PocketSphinx all-phone decoding, fed as the audio comes and read back as
  partial hypotheses (`LivePhones`); an utterance is cut at a quiet point after
  MIN_UTTERANCE_S (at the latest after MAX_UTTERANCE_S), as file jobs cut their pieces,
  because the all-phone search degrades on long ones. A frame renders with the phones heard
  by the time its look-ahead is in; the acoustic estimate covers what they do not;
- the zero-phase smoothing runs backward from the end of the look-ahead: with time
  constants of 10-20 ms a look-ahead of 60 ms leaves under 2 % of a step unsettled.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

import numpy as np

from libs.talkface import api
from libs.talkface.audio import (
    GRID_HZ,
    HOP,
    SAMPLE_RATE,
    _Features,
    _TrackBuilder,
    energy_at,
    speaking_level,
)
from libs.talkface.phones import Phones

LOOKAHEAD_S = 0.06  # audio after a frame's end that must be in before the frame renders
MAX_LOOKAHEAD_S = 0.1
CONTEXT_S = 1.0  # audio before the first unrendered frame kept in the window (smoothing, murmur level)
HISTORY_S = 8.0  # speech the running speaking level is measured over
MIN_UTTERANCE_S = 0.8
MAX_UTTERANCE_S = 1.6
QUIET_BELOW_LEVEL_DB = 30.0  # a 10 ms step this far below the speaking level is a place to cut


def _period(fps: float) -> int:
    """Frames after which frame and 10 ms grid edges meet again (1 at 25 fps, 3 at 30, 6 at 24)."""
    if float(fps).is_integer():
        return int(fps) // math.gcd(int(fps), GRID_HZ)
    return 1  # a fractional rate: edges are rounded, as file jobs round them


class LivePhones:
    """PocketSphinx all-phone decoding of audio as it arrives; phones on the absolute 10 ms grid."""

    def __init__(self) -> None:
        from libs.talkface.phones import _new_decoder

        self._dec = _new_decoder()
        self._final: deque = deque()  # (start, end, label) of finished utterances
        self._partial: Phones = []
        self._utt_start = 0  # grid index where the current utterance began
        self._fed = 0  # grid steps fed into the current utterance
        self._pending = np.zeros(0, np.int16)
        self._rng = np.random.default_rng(0)
        self._start()

    def _start(self) -> None:
        # as recognise_phones does per piece: the noise floor is tracked per utterance
        self._dec.reinit_feat()
        self._dec.start_utt()
        self._fed = 0
        self._partial = []

    def feed(self, samples: np.ndarray, quiet_now: bool) -> None:
        """Decode `samples` (float32, continuing the last ones); `quiet_now` says the latest audio
        is a pause, where an utterance long enough may be cut."""
        pcm = np.clip(samples, -1.0, 1.0) * 32767.0
        # the same ±1 LSB dither as file jobs: digital silence makes the decoder call speech silence
        pcm += self._rng.uniform(-1.0, 1.0, pcm.shape)
        pcm = np.concatenate([self._pending, np.clip(np.round(pcm), -32768, 32767).astype(np.int16)])
        whole = (pcm.size // HOP) * HOP  # utterances start on grid edges, so their frames are grid steps
        self._pending = pcm[whole:]
        if whole == 0:
            return
        self._dec.process_raw(pcm[:whole].astype("<i2").tobytes(), full_utt=False)
        self._fed += whole // HOP
        seconds = self._fed / GRID_HZ
        if seconds >= MAX_UTTERANCE_S or (quiet_now and seconds >= MIN_UTTERANCE_S):
            self._dec.end_utt()
            self._final.extend(self._segments())
            self._utt_start += self._fed
            self._start()
        else:
            self._partial = self._segments()

    def _segments(self) -> Phones:
        out = []
        for seg in self._dec.seg() or []:
            word = seg.word
            if word in ("SIL", "(NULL)", "<s>", "</s>", "<sil>") or word.startswith("+"):
                word = "SIL"
            out.append((self._utt_start + int(seg.start_frame), self._utt_start + int(seg.end_frame) + 1, word))
        return out

    def phones(self, since: int) -> Phones:
        """Phones heard so far that end after grid index `since`; older ones are forgotten."""
        while self._final and self._final[0][1] <= since:
            self._final.popleft()
        return [p for p in (*self._final, *self._partial) if p[1] > since]


class LiveMouth:
    """The mouth track of speech that is still arriving, frame by frame (see the module doc)."""

    def __init__(self, fps: float, lookahead_s: float = LOOKAHEAD_S, phones: bool = True):
        if not 0.0 <= lookahead_s <= MAX_LOOKAHEAD_S:
            raise ValueError(f"the look-ahead must be 0 to {MAX_LOOKAHEAD_S} s")
        self.fps = float(fps)
        self.lookahead = float(lookahead_s)
        self._period = _period(self.fps)
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self.received = 0  # samples received in all
        self.done = 0  # frames given out
        self._levels: deque = deque(maxlen=int(HISTORY_S * GRID_HZ))  # dBFS of finished 10 ms steps
        self._levels_upto = 0  # grid index the levels reach
        self._phones = LivePhones() if phones else None
        self._quiet_db = 0.0  # the last step's level, for cutting utterances

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds: the session's audio clock."""
        return self.received / SAMPLE_RATE

    def _edge(self, frame: int) -> int:
        """Grid index where `frame` starts."""
        return int(round(frame * GRID_HZ / self.fps))

    def feed(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        if samples.size == 0:
            return
        self._buf = np.concatenate([self._buf, samples])
        self.received += samples.size
        if self._phones is not None:
            tail = samples[-HOP:]
            level = 10.0 * math.log10(float(np.mean(tail.astype(np.float64) ** 2)) + 1e-12) + 3.0
            quiet = level < self._level() - QUIET_BELOW_LEVEL_DB
            self._phones.feed(samples, quiet)

    def _level(self) -> float:
        return speaking_level(np.fromiter(self._levels, np.float64, len(self._levels)))

    def ready(self) -> int:
        """Frames whose audio and look-ahead are in (all frames given out so far included)."""
        return max(self.done, int(math.floor((self.seconds - self.lookahead) * self.fps + 1e-9)))

    def next_span(self) -> Optional[tuple[int, api.MouthTrack]]:
        """(first frame, track) of the frames that became ready since the last call, or None."""
        upto = self.ready()
        if upto <= self.done:
            return None
        first = self.done
        # the window starts on a frame whose edge is a grid edge, CONTEXT_S before the first frame
        w_frame = max(0, first - int(CONTEXT_S * self.fps))
        w_frame -= w_frame % self._period
        g0 = self._edge(w_frame)
        s0 = g0 * HOP
        window = self._buf[s0 - self._buf_start:]
        feats = _Features(window)
        g_ready = self._edge(upto)
        # steps before the frames now made are final: they join the running speaking level
        for g in range(max(self._levels_upto, g0), min(g0 + len(feats), g_ready)):
            self._levels.append(float(feats.db[g - g0]))
        self._levels_upto = max(self._levels_upto, g_ready)
        level = speaking_level(np.concatenate([np.fromiter(self._levels, np.float64, len(self._levels)),
                                               feats.db[g_ready - g0:]]))
        feats.energy = energy_at(feats.db, level)
        builder = _TrackBuilder(window, self.fps, upto - w_frame, features=feats)
        if self._phones is not None:
            heard = [(a - g0, b - g0, label) for a, b, label in self._phones.phones(g0)]
            builder.add_phones(heard, 0, len(feats))
        track = builder.span(first - w_frame, upto - w_frame)
        self.done = upto
        # keep CONTEXT_S (and a period) before the next frame
        keep_frame = max(0, upto - int(CONTEXT_S * self.fps) - self._period)
        keep = self._edge(keep_frame - keep_frame % self._period) * HOP
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:]
            self._buf_start = keep
        return first, track


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM to float32 in [-1, 1)."""
    if len(data) % 2:
        raise api.BadAudioError("PCM16 audio must hold whole 2-byte samples")
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


__all__ = ["LiveMouth", "LivePhones", "LOOKAHEAD_S", "MAX_LOOKAHEAD_S", "pcm16_to_float"]
