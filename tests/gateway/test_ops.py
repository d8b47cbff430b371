"""Operations: Prometheus metrics on the gateway and the model services, liveness, replica discovery."""

import socket
import time
import urllib.request

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.clients import Clients, resolve


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_gateway_metrics_show_queue_depth_per_service_and_outcomes_per_kind(stack, portrait, speech):
    url, _ = stack
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        task = requests.post(f"{url}/api/v1/synthesis/start", files={"image": img, "audio": aud},
                             data={"emotion": "sad", "min_resolution": "128", "seed": "901"}).json()["task_id"]
    while requests.get(f"{url}/v1/jobs/{task}").json()["status"] not in ("COMPLETED", "FAILED"):
        time.sleep(0.1)
    resp = requests.get(f"{url}/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples = _samples(resp.text)
    for service in ("dicetalk", "echomimic", "latentsync"):
        assert (("talkserve_queue_depth", (("service", service),)) in samples)
        assert samples[("talkserve_replicas", (("service", service),))] == 1
    # kinds as clients see them: a DICE-Talk task is the native API's "emotion"
    completed = samples[("talkserve_tasks_finished_total",
                         (("kind", "emotion"), ("reason", "ok"), ("status", "COMPLETED")))]
    assert completed >= 1


def test_livez_answers_without_touching_the_backends(stack):
    url, _ = stack
    assert requests.get(f"{url}/livez").json() == {"status": "alive"}


def test_model_service_metrics_endpoint(seaweed):
    """A replica with a metrics port serves Prometheus text with its job metrics."""
    from libs.store.client import ObjectStore
    from services.echomimic.server import EchoMimicSettings, create_echomimic_server
    from tests.servers import fresh_bucket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with fresh_bucket(seaweed.settings) as bucket:
        replica = create_echomimic_server(EchoMimicSettings(port=0, metrics_port=port), ObjectStore(bucket))
        try:
            assert replica.ready.wait(60)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert {"talkserve_jobs_running", "talkserve_job_seconds", "talkserve_rpcs"} <= names
        finally:
            replica.server.stop(0)


def test_dns_targets_resolve_to_one_replica_per_address():
    assert "127.0.0.1:50062" in resolve("dns:///localhost:50062")
    assert resolve("10.1.2.3:50062") == ["10.1.2.3:50062"]
    assert resolve("dns:///no-such-host.invalid:1") == []
    clients = Clients("127.0.0.1:1", {"echomimic": ["dns:///localhost:50062", "127.0.0.1:50099"]})
    try:
        targets = [r.target for r in clients.replicas["echomimic"]]
        assert "127.0.0.1:50062" in targets and "127.0.0.1:50099" in targets
        first = clients.replicas["echomimic"][0]
        clients.refresh()
        assert clients.replicas["echomimic"][0] is first, "a replica that is still there keeps its channel"
    finally:
        clients.close()
