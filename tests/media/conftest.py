"""Fixtures for the media tests: the real media server on port 0, the real store, local HTTP sites.

Every test here runs under a guard that refuses (and reports) any socket connection to an
address that is not loopback, so no test can send a packet off this machine.
"""

from __future__ import annotations

import ipaddress
import pathlib
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from services.media.server import MediaSettings, create_media_server
from talkserve.common.v1 import common_pb2
from talkserve.media.v1 import media_pb2_grpc
from tests.media import mediafiles


@dataclass
class Connects:
    """Every TCP connect attempted in this process during a test: (host, port)."""

    seen: list[tuple[str, int]] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)

    def to(self, host: str, port: int | None = None) -> list[tuple[str, int]]:
        return [c for c in self.seen if c[0] == host and (port is None or c[1] == port)]


@pytest.fixture(autouse=True)
def connects(monkeypatch) -> Connects:
    """Record every socket connect; refuse any to a non-loopback address before it happens."""
    record = Connects()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host, port = address[0], address[1]
            record.seen.append((host, port))
            if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
                record.refused.append((host, port))
                raise ConnectionRefusedError(f"test guard: no traffic to {host}:{port}")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield record
    assert not record.refused, f"a test tried to reach a non-loopback address: {record.refused}"


@dataclass
class Media:
    """A started media server, a stub on a real channel, and the store it serves."""

    stub: media_pb2_grpc.MediaServiceStub
    health: health_pb2_grpc.HealthStub
    store: object
    port: int
    settings: MediaSettings

    def put(self, path: pathlib.Path | str, key: str | None = None) -> common_pb2.ObjectRef:
        """Upload a local file; return its ref."""
        key = key or f"in/{uuid.uuid4().hex[:8]}-{pathlib.Path(path).name}"
        self.store.put_file(key, str(path))
        return common_pb2.ObjectRef(key=key)

    def get(self, ref: common_pb2.ObjectRef, path: pathlib.Path) -> pathlib.Path:
        """Download an object to `path`."""
        self.store.get_file(ref.key, str(path))
        return path


@pytest.fixture
def start_media(store) -> Callable[..., Media]:
    """start_media(**settings) starts a media server on port 0 against the test's store."""
    started = []

    def start(store_override=None, **overrides) -> Media:
        settings = MediaSettings(host="127.0.0.1", port=0, **overrides)
        used = store_override or store
        handle = create_media_server(settings, used)
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        started.append((handle, channel))
        return Media(
            stub=media_pb2_grpc.MediaServiceStub(channel),
            health=health_pb2_grpc.HealthStub(channel),
            store=used,
            port=handle.port,
            settings=settings,
        )

    yield start
    for handle, channel in started:
        channel.close()
        handle.stop(0)


@pytest.fixture
def media(start_media) -> Media:
    """A media server with default settings (no private address may be fetched)."""
    return start_media()


@pytest.fixture
def new_ref() -> Callable[[str], common_pb2.ObjectRef]:
    return lambda name: common_pb2.ObjectRef(key=f"out/{uuid.uuid4().hex[:8]}/{name}")


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, pathlib.Path]:
    """Real media of every kind the service takes, made once with PyAV."""
    folder = tmp_path_factory.mktemp("media")
    made: dict[str, pathlib.Path] = {}

    def path(name: str) -> pathlib.Path:
        made[name] = folder / name
        return made[name]

    seconds = 1.3  # deliberately not a whole number of codec frames
    mediafiles.write_wav(path("tone.wav"), seconds, rate=22050)
    mediafiles.write_audio(path("tone.mp3"), "mp3", "libmp3lame", seconds, rate=44100)
    mediafiles.write_audio(path("tone.flac"), "flac", "flac", seconds, rate=44100)
    mediafiles.write_audio(path("tone.ogg"), "ogg", "libopus", seconds, rate=48000)
    mediafiles.write_audio(path("tone.m4a"), "ipod", "aac", seconds, rate=44100)
    mediafiles.write_video(path("talk.mp4"), seconds, audio_seconds=seconds)
    mediafiles.write_video(path("silent.mp4"), 2.0)
    mediafiles.write_video(path("silent_mpeg4.mp4"), 1.0, codec="mpeg4")
    mediafiles.write_wav(path("short.wav"), 1.2, rate=16000, freq=440)
    mediafiles.write_audio(path("long.mp3"), "mp3", "libmp3lame", 3.1, rate=44100, freq=440)
    for i, length in enumerate((1.0, 1.5, 2.0)):
        mediafiles.write_video(path(f"part{i}.mp4"), length, seed=i)
        mediafiles.write_wav(path(f"part{i}.wav"), length, rate=16000, freq=300 + 200 * i)
    mediafiles.write_video(path("part_big.mp4"), 1.0, size=(192, 144))
    mediafiles.write_video(path("part_30fps.mp4"), 1.0, fps=30)
    mediafiles.write_png(path("face.png"))
    mediafiles.write_jpeg(path("face.jpg"))
    path("garbage.bin").write_bytes(bytes(range(256)) * 64)
    path("notes.txt").write_text("not media, just words\n" * 50)
    return made


# -- a local HTTP site ---------------------------------------------------------------------


class Site:
    """An HTTP server on a loopback address with scripted routes; counts accepted connections.

    Routes: /file/<name> serves bytes registered with `serve`; /redirect?to=<url> answers
    302; /big (Content-Length over any test limit); /big-unsized (no Content-Length, the
    body ends when the connection closes); /slow (1 byte every 0.2 s).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: tuple[str, str] | None = None):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        self.connections = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                site.requests.append(self.path)
                try:
                    site._route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the fetcher gave up, as it should

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                conn = super().get_request()
                site.connections += 1
                return conn

            def handle_error(self, request, client_address):
                pass

        self.server = Server((host, port), Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def serve(self, name: str, data: bytes, content_type: str) -> str:
        self.files[name] = (data, content_type)
        return self.url(f"/file/{name}")

    def _route(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        if path.startswith("/file/") and path[6:] in self.files:
            data, ctype = self.files[path[6:]]
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        elif path == "/redirect":
            h.send_response(302)
            h.send_header("Location", query.removeprefix("to="))
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif path == "/big":
            h.send_response(200)
            h.send_header("Content-Length", str(10 * 1024 * 1024))
            h.end_headers()
            for _ in range(160):
                h.wfile.write(b"\0" * 65536)
        elif path == "/big-unsized":
            h.send_response(200)
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            for _ in range(160):
                h.wfile.write(b"\0" * 65536)
        elif path == "/slow":
            h.send_response(200)
            h.send_header("Content-Length", "100")
            h.end_headers()
            for _ in range(100):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(0.2)
        else:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    """A local HTTP site on 127.0.0.1."""
    s = Site()
    yield s
    s.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """(certificate, key) of a self-signed certificate for the name tls.test only."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tls.test",
             "-addext", "subjectAltName=DNS:tls.test", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl cannot make a test certificate: {exc}")
    return str(cert), str(key)
