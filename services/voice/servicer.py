"""gRPC servicers of the voice service: requests become libs.speech calls and the engine's person jobs."""

from __future__ import annotations

import json
import logging
import math
import pathlib
import posixpath

from libs.engines.protocol import PersonTrainJob, PersonVideoJob
from libs.grpcutil.errors import InvalidRequest
from libs.grpcutil.jobs import run_job
from libs.grpcutil.model_service import Staging, named, video_result
from libs.speech import asr
from libs.speech import profile as voice_profile
from libs.speech.espeak import write_wav
from libs.talkface import api
from libs.talkface.audio import SAMPLE_RATE, load_audio
from talkserve.common.v1 import common_pb2
from talkserve.voice.v1 import voice_pb2, voice_pb2_grpc

log = logging.getLogger(__name__)

VOICE_PROFILE_FILE = "voice_profile.json"
_LANGUAGES = {voice_pb2.LANGUAGE_ENGLISH: "en", voice_pb2.LANGUAGE_MANDARIN: "cmn"}
_CONTENT_TYPES = {".json": "application/json", ".npz": "application/octet-stream", ".mp4": "video/mp4",
                  ".wav": "audio/wav"}


def profile_to_proto(p: voice_profile.VoiceProfile) -> voice_pb2.VoiceProfile:
    return voice_pb2.VoiceProfile(**p.to_dict())


def profile_from_proto(msg: voice_pb2.VoiceProfile) -> voice_profile.VoiceProfile:
    """The engine's profile from a request; refuses one measured on other bands or impossible values."""
    if list(msg.envelope_hz) and [round(f, 1) for f in msg.envelope_hz] != list(voice_profile.ENVELOPE_HZ):
        raise InvalidRequest("the voice profile was measured on other frequency bands; measure it again")
    if len(msg.envelope_db) not in (0, len(voice_profile.ENVELOPE_HZ)):
        raise InvalidRequest("the voice profile's envelope has the wrong number of bands")
    if not (voice_profile.F0_MIN_HZ <= msg.f0_median_hz <= voice_profile.F0_MAX_HZ):
        raise InvalidRequest(f"f0_median_hz must lie within {voice_profile.F0_MIN_HZ:.0f}.."
                             f"{voice_profile.F0_MAX_HZ:.0f} Hz")
    if not all(math.isfinite(v) for v in (msg.syllables_per_second, *msg.envelope_db)):
        raise InvalidRequest("the voice profile holds values that are not numbers")
    return voice_profile.VoiceProfile(
        f0_median_hz=msg.f0_median_hz, f0_p10_hz=msg.f0_p10_hz, f0_p90_hz=msg.f0_p90_hz,
        voiced_fraction=msg.voiced_fraction, syllables_per_second=msg.syllables_per_second,
        spectral_tilt_db_per_octave=msg.spectral_tilt_db_per_octave, envelope_db=list(msg.envelope_db),
        speech_seconds=msg.speech_seconds, version=msg.version or voice_profile.PROFILE_VERSION,
    )


def check_prefix(prefix: str) -> str:
    """A model prefix must be a plain key folder: no absolute path, no `..`, ending in `/`."""
    if not prefix or not prefix.endswith("/") or prefix.startswith("/") or "\\" in prefix:
        raise InvalidRequest("model_prefix must be a relative key prefix ending in '/'")
    if posixpath.normpath(prefix) + "/" != prefix or ".." in prefix.split("/"):
        raise InvalidRequest("model_prefix must not contain '..' or empty segments")
    return prefix


class VoiceServicer(voice_pb2_grpc.VoiceServiceServicer):
    """Speech calls: short, CPU-only, no slot (espeak-ng serialises itself; recognisers are pooled)."""

    def __init__(self, staging: Staging, max_text_chars: int, asr_engine: asr.Engine = "auto",
                 models_dir: str | None = None):
        self._staging = staging
        self._max_text = max_text_chars
        self._asr = (asr_engine, models_dir)

    def Synthesize(self, request, context):
        text = request.text.strip()
        if not text:
            raise InvalidRequest("text is empty")
        if len(text) > self._max_text:
            raise InvalidRequest(f"text is longer than {self._max_text} characters")
        if not request.output.key:
            raise InvalidRequest("output is required")
        language = _LANGUAGES.get(request.language) or voice_profile.detect_language(text)
        profile = profile_from_proto(request.profile) if request.HasField("profile") else None
        try:
            speech, settings = voice_profile.synthesize_like(text, language, profile, request.pitch_semitones)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        if speech.samples.size == 0:
            raise InvalidRequest("espeak-ng produced no sound for this text")
        with self._staging.job_dir("tts") as tmp:
            path = tmp / "speech.wav"
            write_wav(speech, path)
            self._staging.store.put_file(request.output.key, str(path), content_type="audio/wav")
        return voice_pb2.SynthesizeResponse(
            output=request.output, duration_seconds=speech.duration_s, sample_rate=speech.sample_rate,
            settings=voice_pb2.SynthesisSettings(voice=settings.voice, pitch=settings.pitch,
                                                 rate_wpm=settings.rate_wpm, eq_db=settings.eq_db),
            engine=voice_profile.ENGINE_NAME,
        )

    def _samples(self, ref: common_pb2.ObjectRef, name: str):
        if not ref.key:
            raise InvalidRequest("audio is required")
        with self._staging.job_dir(name) as tmp:
            return load_audio(self._staging.fetch(ref, tmp / "audio"))

    def ExtractProfile(self, request, context):
        samples = self._samples(request.audio, "profile")
        try:
            profile = voice_profile.extract_profile(samples, SAMPLE_RATE)
        except voice_profile.ProfileError as exc:
            raise InvalidRequest(str(exc)) from exc
        return voice_pb2.ExtractProfileResponse(profile=profile_to_proto(profile), engine=voice_profile.ENGINE_NAME)

    def Recognize(self, request, context):
        transcript = asr.recognize(self._samples(request.audio, "asr"), *self._asr)
        return voice_pb2.RecognizeResponse(
            text=transcript.text, duration_seconds=transcript.duration_s, engine=transcript.engine,
            words=[voice_pb2.Word(text=w.text, start_seconds=w.start_s, end_seconds=w.end_s)
                   for w in transcript.words],
        )


class PersonServicer(voice_pb2_grpc.PersonServiceServicer):
    """Person-model jobs: one per slot, run by libs.grpcutil.jobs with progress and cancellation."""

    def __init__(self, slots, engines, staging: Staging, settings):
        self._slots = slots
        self._engines = engines
        self._staging = staging
        self._settings = settings

    def _upload(self, local: pathlib.Path, key: str) -> voice_pb2.ModelFile:
        self._staging.store.put_file(key, str(local), content_type=_CONTENT_TYPES.get(local.suffix))
        return voice_pb2.ModelFile(file=common_pb2.ObjectRef(key=key), size_bytes=local.stat().st_size)

    def TrainPersonModel(self, request, context):
        prefix = check_prefix(request.model_prefix)
        if not request.video.key:
            raise InvalidRequest("video is required")
        s = self._settings
        limits = {
            "max_seconds": min(request.max_seconds or s.max_train_seconds, s.max_train_seconds),
            "base_seconds": min(request.base_seconds or s.base_seconds, s.max_train_seconds),
            "max_atlas_entries": min(request.max_atlas_entries or s.max_atlas_entries, s.max_atlas_entries),
        }

        def work(progress, should_stop):
            with self._staging.job_dir(request.job_id) as tmp:
                video = self._staging.fetch(request.video, tmp / "video")
                out = tmp / "model"
                out.mkdir()
                with self._engines.engine() as engine:
                    info = engine.train_person(PersonTrainJob(str(video), str(out), **limits), progress, should_stop)
                    *names, last = engine.person_files
                    made_by = info.engine or engine.name
                has_voice = _voice_profile_of(video, out / VOICE_PROFILE_FILE)
                progress(api.Progress("upload", 0, 1, "Saving the person model..."))
                if has_voice:
                    names.append(VOICE_PROFILE_FILE)
                # The engine's last file goes last: its presence says the model is complete.
                files = [self._upload(out / n, prefix + n) for n in (*names, last)]
                return voice_pb2.TrainPersonModelResult(
                    model_prefix=prefix, files=files, frames_read=info.frames_read,
                    frames_with_face=info.frames_with_face, atlas_entries=info.atlas_entries, fps=info.fps,
                    width=info.width, height=info.height, has_voice_profile=has_voice, engine=made_by,
                    seconds=info.seconds,
                )

        yield from run_job(
            context, self._slots, work,
            wrap_progress=lambda p: voice_pb2.TrainPersonModelResponse(progress=p),
            wrap_result=lambda r: voice_pb2.TrainPersonModelResponse(result=r),
        )

    def GeneratePersonVideo(self, request, context):
        prefix = check_prefix(request.model_prefix)
        if not request.audio.key or not request.output.key:
            raise InvalidRequest("audio and output are required")

        def work(progress, should_stop):
            with self._staging.job_dir(request.job_id) as tmp, self._engines.engine() as engine:
                model_dir = tmp / "model"
                model_dir.mkdir()
                for name in engine.person_files:
                    self._staging.fetch(common_pb2.ObjectRef(key=prefix + name), model_dir / name)
                audio = self._staging.fetch(request.audio, tmp / "audio.wav")
                job = PersonVideoJob(str(model_dir), str(audio), str(tmp / "video.mp4"))
                result = named(engine.generate_person(job, progress, should_stop), engine)
                progress(api.Progress("upload", 0, 1, "Saving video..."))
                # With the result as metadata, a retried task reuses the video instead of rendering again.
                self._staging.publish(tmp / "video.mp4", request.output, result)
                log.info("job %s finished: %d frames", request.job_id, result.frames)
                return result

        yield from run_job(
            context, self._slots, work,
            wrap_progress=lambda p: voice_pb2.GeneratePersonVideoResponse(progress=p),
            wrap_result=lambda r: voice_pb2.GeneratePersonVideoResponse(result=video_result(r, request.output)),
        )


def _voice_profile_of(video: pathlib.Path, dest: pathlib.Path) -> bool:
    """Measure the voice of the video's sound track into `dest`; False when it has no usable speech."""
    try:
        profile = voice_profile.extract_profile(load_audio(video), SAMPLE_RATE)
    except (api.BadAudioError, voice_profile.ProfileError) as exc:
        log.info("no voice profile from the training video: %s", exc)
        return False
    dest.write_text(json.dumps(profile.to_dict()))
    return True
