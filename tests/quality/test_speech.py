"""espeak-ng text-to-speech: audio and phoneme events in English and Mandarin, thread safety."""

from __future__ import annotations

import threading
import wave

import numpy as np
import pytest

from libs.speech import SpeechError, synthesize, to_arpabet, write_wav


def _check(speech, min_phonemes):
    assert speech.sample_rate == 22050
    assert speech.samples.dtype == np.int16 and speech.samples.size > speech.sample_rate // 2
    assert np.abs(speech.samples.astype(np.int32)).max() > 1000  # not silence
    assert len(speech.phonemes) >= min_phonemes
    starts = [a for a, _, _ in speech.phonemes]
    assert starts == sorted(starts)
    for a, b, sym in speech.phonemes:
        assert 0.0 <= a < b <= speech.duration_s + 1e-6
        assert sym and not sym.startswith("_")


@pytest.mark.parametrize("voice", ["en", "en-us"])
def test_english_has_audio_and_phonemes(voice):
    speech = synthesize("Bob made a pop map.", voice=voice)
    _check(speech, 10)
    arpabet = [to_arpabet(p) for _, _, p in speech.phonemes]
    assert arpabet[:1] == ["B"] and arpabet.count("P") == 3 and arpabet.count("M") == 2


def test_mandarin_has_audio_and_phonemes():
    speech = synthesize("你好，世界。今天天气很好。", voice="cmn")
    _check(speech, 10)


def test_phoneme_times_follow_the_sound():
    # A voiceless stop's release is loud after its silent closure: the P event must
    # sit at that burst, within a few milliseconds.
    speech = synthesize("a pa", voice="en-us")
    x = speech.samples.astype(np.float64)
    rate = speech.sample_rate
    (p_start,) = [a for a, _, s in speech.phonemes if s == "p"]
    i = int(p_start * rate)
    before = np.sqrt(np.mean(x[i - int(0.03 * rate):i - int(0.005 * rate)] ** 2))
    after = np.sqrt(np.mean(x[i:i + int(0.02 * rate)] ** 2))
    assert after > 10 * (before + 1)


def test_rate_and_pitch_apply_to_one_call_only():
    base = synthesize("one two three four five", voice="en").duration_s
    fast = synthesize("one two three four five", voice="en", rate_wpm=350).duration_s
    again = synthesize("one two three four five", voice="en").duration_s
    assert fast < 0.7 * base
    assert abs(again - base) < 0.05
    with pytest.raises(ValueError):
        synthesize("x", rate_wpm=10)


def test_unknown_voice_is_an_error():
    with pytest.raises(SpeechError):
        synthesize("hello", voice="no-such-voice")


def test_concurrent_calls_give_the_same_speech():
    texts = ["the first sentence", "a second, longer sentence than that", "three"]
    serial = {t: synthesize(t, voice="en").samples.size for t in texts}
    results, errors = [], []

    def work(t):
        try:
            for _ in range(3):
                results.append((t, synthesize(t, voice="en").samples.size))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in texts * 2]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 18
    for t, n in results:
        assert abs(n - serial[t]) < 0.02 * serial[t]


def test_write_wav_round_trip(tmp_path):
    speech = synthesize("hello", voice="en")
    path = tmp_path / "hello.wav"
    write_wav(speech, path)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert np.array_equal(data, speech.samples)
