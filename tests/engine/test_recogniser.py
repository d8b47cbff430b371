"""The mouth track as a stream of spans, and phone recognition in the engine's child process."""

from __future__ import annotations

import numpy as np
import pytest

from libs.talkface import audio, phones
from libs.talkface import recogniser as recogniser_module
from libs.talkface.recogniser import PhoneRecogniser

FPS = 24


@pytest.fixture(scope="module")
def samples(other_speech):
    return audio.load_audio(other_speech[0])  # about 5 s: three pieces


@pytest.fixture(scope="module")
def pieces(samples):
    f = audio._Features(samples)
    cuts = audio._cuts(f.db)
    return [samples[a * audio.HOP:b * audio.HOP] for a, b in zip(cuts[:-1], cuts[1:])]


@pytest.fixture
def recogniser():
    rec = PhoneRecogniser()
    yield rec
    rec.close()


def _frames(samples) -> int:
    return int(round(samples.size / audio.SAMPLE_RATE * FPS))


def test_pieces_are_cut_short_first_and_in_quiet_places(samples):
    f = audio._Features(samples)
    cuts = audio._cuts(f.db)
    assert cuts[0] == 0 and cuts[-1] == len(f) and len(cuts) >= 4
    lengths = np.diff(cuts) / audio.GRID_HZ
    assert 0.6 <= lengths[0] <= 1.4  # the first is short, so frames start coming early
    assert all(0.5 <= x <= audio.CHUNK_S + 2 * audio.CUT_SEARCH_S for x in lengths[1:-1])
    for c in cuts[1:-1]:
        # among the quietest 10 ms around it
        assert f.db[c] <= np.percentile(f.db[max(0, c - 40):c + 40], 10)


def test_spans_cover_every_frame_once_and_join_to_the_track(samples):
    n = _frames(samples)
    asked = []

    def counting(pieces):
        for found in phones.recognise_in_turn(pieces):
            asked.append(1)
            yield found

    spans = []
    stream = audio.mouth_track_stream(samples, FPS, n, recognise=counting)
    energy = stream.energy  # known before any phone is
    assert not asked
    for first, track in stream:
        spans.append((first, len(track.open), len(asked), track))
    assert [s[0] for s in spans] == [0] + list(np.cumsum([s[1] for s in spans])[:-1])
    assert sum(s[1] for s in spans) == n
    assert len(spans) >= 3
    assert spans[0][2] == 1, "the first frames waited for more than the first piece"
    whole = audio.mouth_track(samples, FPS, n)
    assert np.array_equal(energy, whole.energy)
    for name in ("open", "width", "press", "energy"):
        joined = np.concatenate([getattr(s[3], name) for s in spans])
        assert np.array_equal(joined, getattr(whole, name)), name


def test_phones_do_not_depend_on_what_was_recognised_before(pieces):
    first = phones.recognise_phones(pieces[1])
    phones.recognise_phones(pieces[0])
    phones.recognise_phones(np.random.default_rng(1).normal(0, 0.3, 32000).astype(np.float32))
    assert phones.recognise_phones(pieces[1]) == first


def test_the_child_recognises_as_the_engine_itself_would(recogniser, pieces):
    expected = [phones.recognise_phones(p) for p in pieces]
    assert list(recogniser(pieces)) == expected
    assert list(recogniser(pieces)) == expected  # and again, on the same child
    assert recogniser._proc is not None and recogniser._proc.poll() is None


def test_a_dead_child_is_replaced_and_nothing_is_lost(recogniser, pieces):
    expected = [phones.recognise_phones(p) for p in pieces]
    assert list(recogniser(pieces)) == expected
    first = recogniser._proc
    first.kill()
    first.wait()
    assert list(recogniser(pieces)) == expected
    assert recogniser._proc is not first and recogniser._proc.poll() is None


def test_a_job_stopped_early_leaves_the_child_usable(recogniser, pieces):
    expected = [phones.recognise_phones(p) for p in pieces]
    stream = recogniser(pieces)
    assert next(stream) == expected[0]
    stream.close()  # the rest of its answers are read away in the background
    pid = recogniser._proc.pid
    assert list(recogniser(pieces)) == expected
    assert recogniser._proc.pid == pid


def test_without_a_child_the_pieces_are_recognised_in_process(recogniser, pieces, monkeypatch):
    def cannot_start():
        raise OSError("no processes left")

    monkeypatch.setattr(recogniser, "start", cannot_start)
    assert list(recogniser(pieces)) == [phones.recognise_phones(p) for p in pieces]


def test_a_second_job_does_not_wait_long_for_a_busy_child(recogniser, pieces, monkeypatch):
    monkeypatch.setattr(recogniser_module, "_WAIT_FOR_CHILD_S", 0.05)
    expected = [phones.recognise_phones(p) for p in pieces]
    holding = recogniser(pieces)
    assert next(holding) == expected[0]
    assert list(recogniser(pieces)) == expected  # in process, meanwhile
    assert list(holding) == expected[1:]


def test_generate_gives_the_same_video_with_or_without_the_child(engine, portrait_path, speech, tmp_path,
                                                                 monkeypatch):
    from libs.talkface.api import PortraitJob
    from libs.talkface.encode import VideoReader

    def render(name):
        out = tmp_path / name
        engine.generate(PortraitJob(image_path=portrait_path, audio_path=speech[0], out_path=str(out),
                                    min_resolution=128, fps=FPS))
        return np.stack(list(VideoReader(out)))

    def cannot_start():
        raise OSError("no processes left")

    with_child = render("child.mp4")
    monkeypatch.setattr(engine.phones, "start", cannot_start)
    assert np.array_equal(render("in_process.mp4"), with_child)
