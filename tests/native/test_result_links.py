"""Result links that keep working for a job's retention: links signed by the gateway for its own
`/v1/results` route (no key, byte ranges, refused once expired or altered), fresh links on every
read of the job, the stable `/v1/jobs/{id}/outputs/{name}` route, and the CLI downloading long
after the links it first saw expired."""

from __future__ import annotations

import json
import time
import urllib.parse

import httpx
import pytest
from pydantic import SecretStr

from libs.store.client import ObjectStore
from services.gateway.result_links import LinkRefused, ResultLinks
from services.gateway.settings import GatewaySettings
from tests import servers
from tests.native.conftest import FAST, KEYS
from tests.native.test_cli import talkserve

LIFETIME = 2
ALICE = {"Authorization": f"Bearer {list(KEYS)[0]}"}


@pytest.fixture(scope="module")
def signed(backend):
    """A gateway that requires keys and serves results through itself, with short-lived links."""
    with servers.gateway(backend, require_api_keys=True, api_keys=KEYS, result_links="gateway",
                         result_link_seconds=LIFETIME, **FAST) as url:
        yield url


@pytest.fixture(scope="module")
def short(backend):
    """Keys off, presigned store links that expire fast."""
    with servers.gateway(backend, result_link_seconds=LIFETIME, **FAST) as url:
        yield url


def _finished(client: httpx.Client, portrait, speech) -> dict:
    with open(portrait, "rb") as img, open(speech, "rb") as aud:
        resp = client.post("/v1/jobs", data={"kind": "portrait", "width": "256", "height": "256"},
                           files={"image": img, "audio": aud})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    for _ in range(1200):
        job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.1)
    assert job["status"] == "COMPLETED", job
    return job


def test_gateway_signed_links_play_seek_expire_and_renew(signed, portrait, speech):
    with httpx.Client(base_url=signed, headers=ALICE, timeout=30) as client:
        job = _finished(client, portrait, speech)
        video = job["outputs"]["video"]
        assert video["url"].startswith(f"/v1/results/{job['id']}/video?")
        assert video["stable_url"] == f"/v1/jobs/{job['id']}/outputs/video"

    with httpx.Client(base_url=signed, timeout=30) as anyone:  # no key: the link is the permission
        whole = anyone.get(video["url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert whole.content[4:8] == b"ftyp" and whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-disposition"].startswith("inline;")
        size = len(whole.content)
        part = anyone.get(video["url"], headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{size}"
        tail = anyone.get(video["url"], headers={"Range": "bytes=-50"})
        assert tail.status_code == 206 and tail.content == whole.content[-50:]
        assert anyone.get(video["url"], headers={"Range": f"bytes={size}-"}).status_code == 416
        attached = anyone.get(video["download_url"])
        assert attached.headers["content-disposition"] == f'attachment; filename="{job["id"]}_video.mp4"'
        assert attached.content == whole.content

        # Altered links are refused: another output, another job, the expiry moved.
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(video["url"]).query))
        for altered in (video["url"].replace("/video?", "/mask?"),
                        video["url"].replace(job["id"], "0" * 8 + job["id"][8:]),
                        video["url"].replace(f"expires={query['expires']}", f"expires={int(query['expires']) + 3600}")):
            refused = anyone.get(altered)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "invalid_link", altered
        # The stable route needs the key.
        assert anyone.get(video["stable_url"]).status_code == 401

        time.sleep(LIFETIME + 1.5)
        expired = anyone.get(video["url"])
        assert expired.status_code == 403
        error = expired.json()["error"]
        assert error["code"] == "link_expired" and f"GET /v1/jobs/{job['id']}" in error["message"]

    with httpx.Client(base_url=signed, headers=ALICE, timeout=30) as client:
        fresh = client.get(f"/v1/jobs/{job['id']}").json()["outputs"]["video"]
        assert fresh["url"] != video["url"]
        assert httpx.get(signed + fresh["url"], timeout=30).content == whole.content
        stable = client.get(video["stable_url"], headers={"Range": "bytes=0-9"})
        assert stable.status_code == 206 and stable.content == whole.content[:10]
        assert client.get(video["stable_url"]).content == whole.content


def test_store_links_expire_and_a_read_of_the_job_renews_them(short, portrait, speech):
    with httpx.Client(base_url=short, timeout=30) as client:
        job = _finished(client, portrait, speech)
        link = job["outputs"]["video"]["url"]
        assert httpx.get(link, timeout=30).status_code == 200
        time.sleep(LIFETIME + 1.5)
        assert httpx.get(link, timeout=30).status_code == 403
        fresh = client.get(f"/v1/jobs/{job['id']}").json()["outputs"]["video"]
        assert httpx.get(fresh["url"], timeout=30).status_code == 200


def test_the_cli_downloads_after_the_links_expired(short, portrait, speech, tmp_path):
    made = talkserve("--url", short, "submit", "portrait", "--image", str(portrait), "--audio", str(speech),
                     "--set", "width=256", "--set", "height=256", "--no-download")
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    seen = talkserve("--url", short, "status", job_id, "--json")
    first = json.loads(seen.stdout)["outputs"]["video"]["url"]
    time.sleep(LIFETIME + 1.5)
    assert httpx.get(first, timeout=30).status_code == 403

    out = tmp_path / "later.mp4"
    saved = talkserve("--url", short, "download", job_id[:8], "-o", str(out))
    assert saved.returncode == 0, saved.stderr
    assert out.read_bytes()[4:8] == b"ftyp"
    # What `status` prints now is a link that works.
    status = talkserve("--url", short, "status", job_id)
    link = next(line.split()[1] for line in status.stdout.splitlines() if line.startswith("video"))
    fetched = httpx.get(link, timeout=30)
    assert fetched.status_code == 200 and fetched.content == out.read_bytes()


def test_links_are_absolute_on_the_public_url_and_good_on_every_replica(store: ObjectStore):
    settings = GatewaySettings(result_links="gateway", public_url="https://talkserve.example.com/")
    one, sibling = ResultLinks(settings, store), ResultLinks(settings, ObjectStore(store.settings))
    url = one.gateway_link("job-1", "video", int(time.time()) + 60, download=False)
    assert url.startswith("https://talkserve.example.com/v1/results/job-1/video?expires=")
    assert one.stable_url("job-1", "video") == "https://talkserve.example.com/v1/jobs/job-1/outputs/video"
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    sibling.check("job-1", "video", query["expires"], False, query["signature"])  # another replica accepts it
    with pytest.raises(LinkRefused):
        sibling.check("job-1", "video", query["expires"], True, query["signature"])  # not a download link
    for bad_expires, bad_signature in ((query["expires"], "é" * 43), ("soon", query["signature"])):
        with pytest.raises(LinkRefused):
            sibling.check("job-1", "video", bad_expires, False, bad_signature)
    other = ObjectStore(store.settings.model_copy(update={"secret_key": SecretStr("another-secret")}))
    with pytest.raises(LinkRefused):
        ResultLinks(settings, other).check("job-1", "video", query["expires"], False, query["signature"])
