"""Service logs an operator can follow: JSON lines on request, and a debug level that shows
talkserve's own messages rather than a library's flood."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services.stack import ROOT, free_port, store_env, wait_grpc_serving


def _start_and_stop(service: str, port_var: str, settings, extra: dict) -> list[str]:
    port = free_port("127.0.0.1")
    env = {**os.environ, **store_env(settings), port_var: str(port), **extra}
    proc = subprocess.Popen([sys.executable, "-m", service], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_grpc_serving(f"127.0.0.1:{port}", 180, proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    return [line for line in out.splitlines() if line.strip()]


def test_a_model_service_at_debug_level_logs_its_own_lines_as_json(store):
    lines = _start_and_stop("services.dicetalk", "TALKSERVE_DICETALK_PORT", store.settings,
                            {"TALKSERVE_LOG_LEVEL": "DEBUG", "TALKSERVE_LOG_FORMAT": "json",
                             "TALKSERVE_DICETALK_REPLICA_ID": "dicetalk-logs"})
    assert 0 < len(lines) < 200, f"{len(lines)} lines at start; the first: {lines[:5]}"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # LiteRT's C++ side writes to stderr itself, past Python's logging
    assert all("TensorFlow Lite" in line for line in lines if not line.startswith("{"))
    assert all({"time", "level", "logger", "message", "service", "request_id"} <= r.keys() for r in records)
    assert all(r["service"] == "dicetalk-logs" for r in records)
    assert any(r["level"] == "DEBUG" for r in records) or any(r["level"] == "INFO" for r in records)
    assert not any(r["logger"].startswith("numba") for r in records)


def test_the_media_service_logs_text_lines_by_default(store):
    lines = _start_and_stop("services.media", "TALKSERVE_MEDIA_PORT", store.settings, {})
    assert lines and all(" media " in line for line in lines), lines[:3]
