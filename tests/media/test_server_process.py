"""The media service as deployed: `python -m services.media` from the environment, and store outages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.grpcutil.errors import error_code_of
from libs.store.client import ObjectStore
from talkserve.media.v1 import media_pb2, media_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_module_serves_from_env_and_stops_on_sigterm(store, files):
    settings = store.settings
    port = _free_port()
    env = {
        **os.environ,
        "TALKSERVE_MEDIA_HOST": "127.0.0.1",
        "TALKSERVE_MEDIA_PORT": str(port),
        "TALKSERVE_S3_ENDPOINT": settings.endpoint,
        "TALKSERVE_S3_ACCESS_KEY": settings.access_key,
        "TALKSERVE_S3_SECRET_KEY": settings.secret_key.get_secret_value(),
        "TALKSERVE_S3_SECURE": str(settings.secure).lower(),
        "TALKSERVE_S3_BUCKET": settings.bucket,
        "TALKSERVE_S3_REGION": settings.region,
        "PYTHONFAULTHANDLER": "1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.media"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "the media service never became SERVING"
                time.sleep(0.2)
            store.put_file("in/tone.wav", str(files["tone.wav"]))
            stub = media_pb2_grpc.MediaServiceStub(channel)
            reply = stub.Probe(media_pb2.ProbeRequest(source={"key": "in/tone.wav"}), timeout=30)
            assert reply.info.has_audio
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            out, _ = proc.communicate(timeout=10)
            pytest.fail(f"no exit within 30 s of SIGTERM:\n{out}")
        assert proc.returncode == 0, out
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_store_outage_is_unavailable(start_media, store, files):
    dead = store.settings.model_copy(update={"endpoint": f"127.0.0.1:{_free_port()}", "retry_for_s": 0.5})
    media = start_media(store_override=ObjectStore(dead))
    with pytest.raises(grpc.RpcError) as caught:
        media.stub.Probe(media_pb2.ProbeRequest(source={"key": "in/tone.wav"}), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code_of(caught.value) == "store_unavailable"
