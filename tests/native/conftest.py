"""Fixtures for talkserve's own API: real services on port 0, a real store, real inputs, a webhook receiver."""

from __future__ import annotations

import functools
import http.server
import json
import pathlib
import threading
import time

import httpx
import pytest
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from tests import servers

# Fast settings: frequent progress writes and event polls, short webhook backoff, loopback allowed.
FAST = dict(progress_interval_seconds=0.1, events_poll_seconds=0.1, webhook_allow_networks=["127.0.0.1/32"],
            webhook_backoff_seconds=0.2, webhook_backoff_max_seconds=1.0, webhook_max_attempts=4,
            webhook_progress_interval_seconds=0.2)
KEYS = {"key-alice-0123456789": "alice", "key-bob-0123456789": "bob"}


@pytest.fixture(scope="session")
def portrait(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("native-inputs") / "portrait.png"
    Image.fromarray(data.astronaut()).resize((256, 256)).save(path)
    return path


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("native-inputs") / "speech.wav"
    write_wav(synthesize("Bob made a map of the moon.", voice="en"), path)
    return path


@pytest.fixture(scope="session")
def long_speech(tmp_path_factory) -> pathlib.Path:
    """About five seconds: long enough that the render reports frames however fast the machine is."""
    path = tmp_path_factory.mktemp("native-inputs") / "long-speech.wav"
    write_wav(synthesize("Bob made a map of the moon. Then he showed it to everyone he met, "
                         "one by one, all afternoon.", voice="en"), path)
    return path


@pytest.fixture(scope="session")
def backend(seaweed):
    """The media and model services, shared by every gateway of the session's native tests."""
    with servers.fresh_bucket(seaweed.settings) as bucket, \
            servers.backend(bucket, fetch_allow_networks=["127.0.0.1/32"]) as back:
        yield back


@pytest.fixture(scope="session")
def api(backend):
    """A gateway with keys off (the local default): its base URL."""
    with servers.gateway(backend, **FAST) as url:
        yield url


@pytest.fixture(scope="session")
def keyed(backend):
    """A gateway that requires API keys (as the prod overlay does)."""
    with servers.gateway(backend, require_api_keys=True, api_keys=KEYS, **FAST) as url:
        yield url


class Receiver:
    """A webhook receiver on 127.0.0.1: records every request, answers with the statuses it is given."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                with receiver.changed:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "at": time.monotonic(), "answered": status})
                    receiver.changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                assert left > 0, f"the receiver did not get what was expected: {self.requests}"
                self.changed.wait(left)
            return list(self.requests)

    def for_path(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def files(tmp_path_factory, portrait, speech):
    """A local web server holding the test inputs, for URL jobs: its base URL."""
    folder = tmp_path_factory.mktemp("native-web")
    (folder / "portrait.png").write_bytes(portrait.read_bytes())
    (folder / "speech.wav").write_bytes(speech.read_bytes())
    (folder / "notes.txt").write_text("not a picture")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")  # a real photo without a face
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def iter_events(resp):
    """Events of a text/event-stream response one by one, as they arrive (independent of the CLI's parser)."""
    current = {"event": "message", "id": None, "data": []}
    for line in resp.iter_lines():
        if line == "":
            if current["data"]:
                yield {"event": current["event"], "id": current["id"], "data": json.loads("\n".join(current["data"]))}
            current = {"event": "message", "id": None, "data": []}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                current["data"].append(value)
            elif name in ("event", "id"):
                current[name] = value


def read_events(resp) -> list[dict]:
    """Every event up to and including the final one."""
    events = []
    for event in iter_events(resp):
        events.append(event)
        if event["event"] in ("completed", "failed", "cancelled"):
            break
    return events


def events(url: str, job_id: str, last_event_id=None, headers=None, timeout: float = 120):
    """Open a job's event stream (httpx streams lines as they come; requests' iter_lines buffers)."""
    headers = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=timeout)
