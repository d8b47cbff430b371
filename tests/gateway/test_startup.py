"""A gateway started before its object store stays up, reports not ready and answers 503, then
becomes ready when the store comes up (as in a fresh Kubernetes cluster), without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from libs.store.seaweed import PORT_FLAGS, SeaweedServer, _free_ports
from services.stack import ROOT, free_port, store_env


def test_the_gateway_waits_unready_for_a_store_that_starts_later(tmp_path):
    store = SeaweedServer(tmp_path / "seaweed")
    store.ports = dict(zip(PORT_FLAGS, _free_ports(store.host, len(PORT_FLAGS))))  # known before it runs
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # a short retry window: each try to reach the store gives up after 2 s (30 s by default),
    # so the seconds below span several of them
    env = {**os.environ, **store_env(store.settings), "TALKSERVE_S3_RETRY_FOR_S": "2",
           "TALKSERVE_GATEWAY_PORTS": json.dumps([port]), "TALKSERVE_LOG_FORMAT": "text"}
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{url}/livez", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the gateway never answered"
            time.sleep(0.2)
        until = time.monotonic() + 8
        while time.monotonic() < until:
            assert proc.poll() is None, f"the gateway exited without its store:\n{log_path.read_text()}"
            ready = requests.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "starting", ready.text
            jobs = requests.get(f"{url}/v1/jobs", timeout=10)
            assert jobs.status_code == 503 and jobs.json()["error"]["code"] == "starting", jobs.text
            assert jobs.headers["retry-after"]
            time.sleep(1.0)

        store.start()
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"never ready after the store came up:\n{log_path.read_text()}"
            time.sleep(0.2)
        assert requests.get(f"{url}/readyz", timeout=10).json()["status"] == "ready"
        assert requests.get(f"{url}/v1/jobs", timeout=10).json()["data"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        store.stop()
    text = log_path.read_text()
    # said once why it is not ready (not a line a second), then that the store answers
    assert text.count("waiting for the object store") == 1, text
    assert "the object store answers" in text and "ready" in text
