"""docs/api.md's shell examples and the README quick start, run as written against a real stack.

The examples are read from the markdown (every ```bash, ```sh and ```console block), so a new
example is covered without touching this file. Each command runs through bash in a temporary
folder that holds the sample inputs it names, made here from real data. Only these are changed:

- ``http://127.0.0.1:8000`` becomes the test gateway's address (the docs' local stack port);
  the ``talkserve`` command gets it from ``TALKSERVE_URL``, its documented setting.
- ``https://example.com`` ("your own server" in the docs) becomes a local web server that
  serves the temporary folder and accepts webhooks (``POST /hooks/...``).
- ``$JOB`` is the id of the job the last example created (a curl answer's ``id``, or the id
  ``talkserve submit --no-wait`` prints); ``$NEXT`` is the ``next_cursor`` of a one-job page
  of ``GET /v1/jobs``; ``$TALKSERVE_API_KEY`` is a key of a gateway that requires keys, and
  commands that send it go to that gateway.

Each command must exit 0 (a command whose comment says it answers ``409`` once the job has ended
may answer that instead) and show what the docs promise: JSON answers without an error, a job id
from a create, the ``status`` a comment quotes, an event stream that ends with the final event,
and a real video (with sound) in every MP4 a command saves.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import av
import httpx
import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from services.stack import ROOT
from tests.gateway.test_latentsync import write_portrait_video
from tests.native.conftest import KEYS

DOC = ROOT / "docs" / "api.md"
README = ROOT / "README.md"
DOC_URL = "http://127.0.0.1:8000"
# Commands that cannot run against the test's stack, and why.
EXCLUDED = {
    "talkserve up": "starts a stack of its own on ports 8000 and 7688 until Ctrl-C; "
                    "test_readme_quick_start_demo runs the same stack start through `talkserve demo`",
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
INPUT = re.compile(r"(?:@|--image\s+|--audio\s+|--video\s+|https://example\.com/)([\w.-]+\.(?:png|jpg|wav|mp3|mp4))")


def split_commands(block: str) -> list[tuple[str, str]]:
    """(command, its comment) for each command of a shell block: a newline ends one unless it is
    escaped or inside quotes (a multi-line JSON body stays one command)."""
    commands, cmd, comment, quote, i = [], [], "", None, 0
    while i < len(block):
        ch = block[i]
        if quote:
            quote = None if ch == quote else quote
            cmd.append(ch)
        elif ch == "\\" and block[i + 1:i + 2] == "\n":
            cmd.append(" ")
            i += 1
        elif ch in "'\"":
            quote = ch
            cmd.append(ch)
        elif ch == "#" and (not cmd or cmd[-1].isspace()):
            end = block.find("\n", i)
            end = len(block) if end < 0 else end
            comment += block[i + 1:end].strip() + " "
            i = end
            continue
        elif ch == "\n":
            if "".join(cmd).strip() or comment:
                commands.append(("".join(cmd).strip(), comment.strip()))
            cmd, comment = [], ""
        else:
            cmd.append(ch)
        i += 1
    if "".join(cmd).strip() or comment:
        commands.append(("".join(cmd).strip(), comment.strip()))
    # a line that is only a comment introduces the command below it, or, at the block's end,
    # says what the command above it answers
    merged: list[tuple[str, str]] = []
    pending = ""
    for text, note in commands:
        if text:
            merged.append((text, (pending + " " + note).strip()))
            pending = ""
        else:
            pending = (pending + " " + note).strip()
    if pending and merged:
        merged[-1] = (merged[-1][0], (merged[-1][1] + " " + pending).strip())
    return merged


def doc_commands() -> list[tuple[str, str]]:
    blocks = re.findall(r"^```(?:bash|sh|console)\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    assert blocks, "docs/api.md has no shell examples"
    return [c for block in blocks for c in split_commands(block)]


def make_input(path: pathlib.Path) -> None:
    """A sample input as the docs name it: the astronaut's portrait, espeak speech, a video of the portrait."""
    if path.exists():
        return
    if path.suffix in (".png", ".jpg"):
        Image.fromarray(data.astronaut()).resize((256, 256)).save(path)
    elif path.suffix == ".wav":
        write_wav(synthesize("Bob made a map of the moon.", voice="en"), path)
    elif path.suffix == ".mp3":
        wav = path.with_suffix(".src.wav")
        make_input(wav)
        with av.open(str(wav)) as src, av.open(str(path), "w") as out:
            stream = out.add_stream("libmp3lame", rate=src.streams.audio[0].rate)
            for frame in src.decode(audio=0):
                frame.pts = None
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    elif path.suffix == ".mp4":
        write_portrait_video(path, seconds=1.0, fps=12, size=128)


def assert_real_video(path: pathlib.Path, sound: bool = True) -> None:
    assert path.is_file() and path.stat().st_size > 1000, f"{path.name} was not saved"
    with av.open(str(path)) as container:
        assert container.streams.video, f"{path.name} has no video"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 5, f"{path.name} has {frames} frames"
    if sound:
        with av.open(str(path)) as container:
            assert container.streams.audio, f"{path.name} has no sound"


def json_values(text: str) -> list:
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


@pytest.fixture(scope="module")
def site(examples_dir):
    """The stand-in for example.com: serves the examples' folder, takes webhooks; yields (url, folder, hooks)."""
    folder, hooks = examples_dir, []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            hooks.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", "0")))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder, hooks
    httpd.shutdown()


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("docs-examples")


def test_every_api_doc_example_runs_as_written(api, keyed, site):
    site_url, folder, hooks = site
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TALKSERVE_URL": api, "TALKSERVE_API_KEY": "", "JOB": "", "NEXT": ""}
    ran = 0
    for command, comment in doc_commands():
        if command in EXCLUDED:
            continue
        for name in INPUT.findall(command):
            make_input(folder / name)
        keyed_cmd = "TALKSERVE_API_KEY" in command
        base = keyed if keyed_cmd else api
        run_env = {**env, "TALKSERVE_API_KEY": next(iter(KEYS)) if keyed_cmd else ""}
        if "$NEXT" in command:
            run_env["NEXT"] = httpx.get(f"{base}/v1/jobs", params={"limit": 1}).json()["next_cursor"] or ""
            assert run_env["NEXT"], "a one-job page has no next_cursor: too few jobs for the paging example"
        script = command.replace(DOC_URL, base).replace("https://example.com", site_url)
        before = set(folder.iterdir())
        done = subprocess.run(["bash", "-c", script], cwd=folder, env=run_env, capture_output=True, text=True,
                              timeout=120)
        where = f"example `{command}` ({comment})\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
        ended = "409" in comment and ("already_finished" in done.stdout or "already" in done.stderr.lower())
        assert done.returncode == 0 or ended, where
        ran += 1
        stdout = done.stdout
        if command.startswith("curl") and "/events" in command:
            events = re.findall(r"^event: (\w+)", stdout, flags=re.M)
            ids = [int(i) for i in re.findall(r"^id: (\d+)", stdout, flags=re.M)]
            if "Last-Event-ID" in command:  # only newer events, or 204 when the client has the final one
                floor = int(re.search(r"Last-Event-ID: (\d+)", command).group(1))
                assert all(i > floor for i in ids), where
                assert not events or events[-1] in ("completed", "failed", "cancelled"), where
            else:
                assert events and events[-1] == "completed", where
                assert ids == sorted(set(ids)), where
        elif command.startswith("curl") and not re.search(r"\s-f?o\s", command):
            values = json_values(stdout)
            assert values, where
            for value in values:
                if isinstance(value.get("error"), dict):
                    assert ended, where
                    continue
                if "/v1/jobs" in command and ("-F" in command or "-d" in command) and "/cancel" not in command:
                    assert UUID.fullmatch(value["id"]) and value["engine"] in (None, "talkface-1"), where
                    env["JOB"] = value["id"]
                quoted = re.search(r'"status": "(\w+)"', comment)
                if quoted:
                    assert value["status"] == quoted.group(1), where
                if "metadata=" in command or '"metadata"' in command:
                    assert value["metadata"] == {"order": "A-1042"}, where
                if "webhooks/secret" in command:
                    assert value["secret"].startswith("whsec_"), where
        elif command.startswith("talkserve submit") and "--no-wait" in command:
            env["JOB"] = UUID.search(stdout + done.stderr).group(0)
        saved = re.search(r"(?:\s-f?o|--output)\s+(\S+\.mp4)", command)
        new_videos = [p for p in set(folder.iterdir()) - before if p.suffix == ".mp4"]
        if saved:
            assert_real_video(folder / saved.group(1))
        elif command.startswith("talkserve") and re.search(r"submit|wait|download", command) \
                and "--no-wait" not in command:
            assert len(new_videos) == 1, where  # default name <kind>-<8 characters of the id>.mp4
            assert_real_video(new_videos[0])
    assert ran >= 20, f"only {ran} examples ran"
    # the examples with a webhook_url: their jobs end after the create answered; each final message
    # must say the job completed (the redub fetched its URLs and rendered), with the metadata sent
    with_hook = [c for c, _ in doc_commands() if "webhook_url" in c and c not in EXCLUDED]
    deadline = time.monotonic() + 60
    while len(finals := [json.loads(body) for path, body in hooks if path == "/hooks/talkserve"
                         and json.loads(body)["type"] in ("job.completed", "job.failed", "job.cancelled")]) \
            < len(with_hook):
        assert time.monotonic() < deadline, f"the docs' webhook_url got {len(finals)} final messages"
        time.sleep(0.2)
    assert all(f["type"] == "job.completed" and f["data"]["engine"] == "talkface-1" for f in finals), finals
    assert {f["data"]["kind"] for f in finals} == {"redub", "emotion"}
    assert [f["data"]["metadata"] for f in finals if f["data"]["kind"] == "emotion"] == [{"order": "A-1042"}]


def test_readme_quick_start_demo(tmp_path_factory):
    """`make demo` as the README says, minus the install the test machine already did: the Makefile's
    own demo command with this venv. It starts its stack on free ports and stops it; only its data
    folder is a temporary one here, so a developer's `talkserve up` in this checkout keeps its store.
    An out/demo.mp4 the developer had is put back afterwards."""
    assert "make demo" in README.read_text() and "out/demo.mp4" in README.read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), flags=re.M).group(1).strip()
    command = recipe.replace("$(BIN)", str(pathlib.Path(sys.executable).parent))
    out = ROOT / "out" / "demo.mp4"
    kept = tmp_path_factory.mktemp("kept") / "demo.mp4"
    had = out.exists()
    if had:
        shutil.move(out, kept)
    try:
        data_dir = tmp_path_factory.mktemp("demo-data")
        done = subprocess.run(f"{command} --data-dir {data_dir}", shell=True, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_real_video(out)
        assert str(out) in done.stdout + done.stderr
    finally:
        out.unlink(missing_ok=True)
        if had:
            shutil.move(kept, out)
        elif out.parent.exists() and not any(out.parent.iterdir()):
            out.parent.rmdir()
