"""The `talkserve` command end to end against a real gateway: submit with a progress bar, list, status, wait,
download, cancel, keys, and help texts a newcomer can follow."""

from __future__ import annotations

import os
import subprocess
import sys

import av
import requests

from services.stack import ROOT
from tests.native.conftest import KEYS


def talkserve(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TALKSERVE_URL": "", "TALKSERVE_API_KEY": "",
                                                **(env or {})})


def test_help_speaks_to_a_newcomer():
    top = talkserve("--help")
    assert top.returncode == 0
    for text in ("talkserve up", "talkserve submit emotion --image", "talkserve wait JOB_ID", "TALKSERVE_API_KEY",
                 "web page at http://127.0.0.1:8000/"):
        assert text in top.stdout, text
    submit = talkserve("submit", "--help")
    assert submit.returncode == 0
    for text in ("portrait", "emotion", "redub", "--emotion", "examples:", "--set NAME=VALUE", "--no-wait"):
        assert text in submit.stdout, text
    for command in ("status", "wait", "download", "cancel", "list", "up", "demo"):
        assert talkserve(command, "--help").returncode == 0, command
    bad = talkserve("submit", "dance")
    assert bad.returncode == 2 and "invalid choice: 'dance'" in bad.stderr


def test_submit_follows_progress_and_downloads_then_every_command_works(api, portrait, speech, long_speech,
                                                                       tmp_path):
    out = tmp_path / "hello.mp4"
    done = talkserve("submit", "emotion", "--url", api, "--image", str(portrait), "--audio", str(long_speech),
                     "--emotion", "happy", "--seed", "7", "--set", "min_resolution=384", "--set", "fps=25",
                     "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    lines = done.stderr.splitlines()
    job_id = next(line.split()[1] for line in lines if line.startswith("job "))
    bars = [line for line in lines if line.startswith("[")]
    assert bars and bars[-1].startswith("[" + "#" * 28 + "] 100.0%")
    assert any("rendering frame" in line for line in bars), bars
    assert f"saved {out}" in done.stderr and "made by talkface-1" in done.stderr
    with av.open(str(out)) as container:
        assert container.streams.video[0].average_rate == 25 and container.streams.audio

    listed = talkserve("list", "--url", api, "--limit", "5")
    assert listed.returncode == 0 and job_id in listed.stdout and "COMPLETED" in listed.stdout
    status = talkserve("status", job_id, "--url", api)
    assert status.returncode == 0 and "COMPLETED" in status.stdout and "talkface-1" in status.stdout
    again = tmp_path / "again.mp4"
    assert talkserve("download", job_id, "--url", api, "-o", str(again)).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    waited = talkserve("wait", job_id, "--url", api, "--no-download")
    assert waited.returncode == 0 and waited.stdout.strip() == job_id

    # A job left running: --no-wait prints its id; cancel stops it; wait then reports it and fails.
    queued = talkserve("submit", "portrait", "--url", api, "--image", str(portrait), "--audio", str(speech),
                       "--set", "width=768", "--set", "height=768", "--set", "fps=60", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    long_id = queued.stdout.strip()
    cancelled = talkserve("cancel", long_id, "--url", api)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stderr
    waited = talkserve("wait", long_id, "--url", api)
    assert waited.returncode == 1 and f"job {long_id} cancelled" in waited.stderr
    twice = talkserve("cancel", long_id, "--url", api)
    assert twice.returncode == 1 and "Job already cancelled" in twice.stderr


def test_redub_from_urls_and_clear_errors(api, files, tmp_path):
    from tests.gateway.test_latentsync import write_portrait_video

    write_portrait_video(tmp_path / "talk.mp4", seconds=1.0, fps=12, size=128)
    out = tmp_path / "dub.mp4"
    done = talkserve("submit", "redub", "--url", api, "--video", str(tmp_path / "talk.mp4"),
                     "--audio", f"{files}/speech.wav", "-o", str(out))
    assert done.returncode == 0, done.stderr
    with av.open(str(out)) as container:
        assert container.streams.video and container.streams.audio
    mask = tmp_path / "mask.mp4"
    job_id = next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("job "))
    assert talkserve("download", job_id, "--url", api, "--result", "mask", "-o", str(mask)).returncode == 0
    assert mask.stat().st_size > 0

    missing = talkserve("submit", "emotion", "--url", api, "--audio", f"{files}/speech.wav")
    assert missing.returncode == 1 and "emotion needs --image" in missing.stderr
    no_file = talkserve("submit", "portrait", "--url", api, "--image", "nope.png", "--audio", "x.wav")
    assert no_file.returncode == 1 and "no such file: nope.png" in no_file.stderr
    refused = talkserve("submit", "emotion", "--url", api, "--image", f"{files}/notes.txt",
                        "--audio", f"{files}/speech.wav", "--set", "emo_scale=42")
    assert refused.returncode == 1 and "emo_scale" in refused.stderr
    down = talkserve("list", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach talkserve at http://127.0.0.1:9" in down.stderr
    assert "talkserve up" in down.stderr


def test_api_keys_from_the_flag_or_the_environment(keyed):
    alice = list(KEYS)[0]
    without = talkserve("list", "--url", keyed)
    assert without.returncode == 1 and "API key is required" in without.stderr and "--api-key" in without.stderr
    wrong = talkserve("list", "--url", keyed, "--api-key", "nope")
    assert wrong.returncode == 1 and "not valid" in wrong.stderr
    assert talkserve("list", "--url", keyed, "--api-key", alice).returncode == 0
    assert talkserve("list", env={"TALKSERVE_URL": keyed, "TALKSERVE_API_KEY": alice}).returncode == 0
    assert requests.get(f"{keyed}/v1/jobs", headers={"Authorization": f"Bearer {alice}"}, timeout=10).ok


def test_output_paths_global_options_urls_id_prefixes_and_page_defaults(api, portrait, speech, tmp_path):
    """--output is where the video goes; --url works before or after the command and without
    http://; the 8 characters of a job id the saved file names carry are enough to name the
    job; a job asking for a result it does not have says so; jobs start from the web page's
    defaults."""
    out = tmp_path / "result.mp4"
    bare = api.removeprefix("http://")
    done = talkserve("--url", bare, "submit", "emotion", "--image", str(portrait), "--audio", str(speech),
                     "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.stat().st_size > 0
    job_id = next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("job "))
    status = talkserve("status", job_id[:8], "--json", "--url", api)
    assert status.returncode == 0, status.stderr
    job = __import__("json").loads(status.stdout)
    assert job["id"] == job_id
    assert job["params"]["emotion"] == "happy" and job["params"]["min_resolution"] == 512
    assert job["params"]["fps"] == 24 and job["params"]["emo_scale"] == 6
    no_mask = talkserve("download", job_id[:8], "--url", api, "--result", "mask", "-o", str(tmp_path / "m.mp4"))
    assert no_mask.returncode == 1 and "has no mask" in no_mask.stderr and "video" in no_mask.stderr
    assert not (tmp_path / "m.mp4").exists()
    unknown = talkserve("--url", api, "status", "ffffffff")
    assert unknown.returncode == 1 and "no job of yours has an id starting with ffffffff" in unknown.stderr


def test_up_reports_a_bad_setting_instead_of_a_traceback(tmp_path):
    from services.stack import free_port

    bad = talkserve("up", "--data-dir", str(tmp_path), "--ports", str(free_port("127.0.0.1")),
                    env={"TALKSERVE_MEDIA_MAX_WORKERS": "many"}, timeout=240)
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert "error: the media service stopped while starting" in bad.stderr
    assert "max_workers" in bad.stderr.split("ends with:")[-1]  # the log's own words about the bad value
