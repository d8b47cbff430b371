"""Fixtures for the EchOfU tests: a talking clip made here, a tiny chat server, the stack on port 0."""

from __future__ import annotations

import http.server
import json
import pathlib
import subprocess
import threading

import imageio_ffmpeg
import pytest

from libs.speech.espeak import synthesize, write_wav
from libs.talkface import api
from libs.talkface.engine import Engine
from tests import servers

TRAINING_SPEECH = "Hello, I am an astronaut. I fly to the moon and back, and I map the stars."


@pytest.fixture(scope="session")
def training_video(tmp_path_factory, lips_together_portrait) -> pathlib.Path:
    """A 256x256 talking clip of a real portrait (lips together at rest, as a speaker's are
    between phrases), with its speech as the sound track."""
    folder = tmp_path_factory.mktemp("training")
    write_wav(synthesize(TRAINING_SPEECH, voice="en-us"), folder / "speech.wav")
    Engine().generate(api.PortraitJob(image_path=lips_together_portrait, audio_path=str(folder / "speech.wav"),
                                      out_path=str(folder / "silent.mp4"), fps=25, min_resolution=256, seed=3,
                                      crop=True))
    out = folder / "grace talking.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(folder / "silent.mp4"),
                    "-i", str(folder / "speech.wav"), "-c:v", "copy", "-c:a", "aac", "-shortest", str(out)],
                   check=True, timeout=60)
    return out


class ChatServer:
    """A minimal OpenAI-compatible chat endpoint on 127.0.0.1 that answers from the question."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                owner.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                question = body["messages"][-1]["content"]
                reply = {"id": "chatcmpl-test", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {
                             "role": "assistant", "content": f"You asked about {question}. Walk two blocks north."}}]}
                data_ = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data_)))
                self.end_headers()
                self.wfile.write(data_)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def chat_server():
    server = ChatServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def echofu(seaweed, chat_server):
    """(gateway URL, backend) with the chat endpoint configured and a 2 MB video limit to test against."""
    with servers.fresh_bucket(seaweed.settings) as bucket, servers.backend(bucket) as back:
        with servers.gateway(back, llm_base_url=chat_server.url, llm_model="test-model", llm_api_key="sk-test",
                             echofu_video_max_bytes=2 * 1024 * 1024) as url:
            yield url, back
