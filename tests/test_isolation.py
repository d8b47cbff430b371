"""Two API keys on a production-like gateway (keys required): nothing of A's is listed, read, used,
changed or named to B, on any route of any API or any file path.

Alice makes something on every API (native jobs, DICE-Talk, EchoMimic single and multi,
LatentSync, and every kind of EchOfU object: uploads, a person model, a speaker, speech, a
video, the chat's recording and answer, history). Bob then walks every route with Alice's ids
and paths and with names that collide with hers. Every answer Bob gets is kept, and at the
end none may contain any of Alice's ids, file names or texts.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time

import pytest
import requests

from libs.speech.espeak import synthesize, wav_bytes
from tests import servers
from tests.echofu.conftest import ChatServer, training_video  # noqa: F401 - training_video is a fixture
from tests.gateway.conftest import portrait, speech  # noqa: F401 - fixtures

KEYS = {"key-alice-isolation-0123": "alice", "key-bob-isolation-0123": "bob"}
ALICE_KEY, BOB_KEY = KEYS
ALICE_TEXT = "Alice keeps the harbour map under the blue lamp."
QUESTION = "Where is the nearest train station?"


def _wav(text: str) -> bytes:
    return wav_bytes(synthesize(text))


class Client:
    """One key's HTTP client; keeps every answer's text (Bob's are searched for Alice's secrets)."""

    def __init__(self, base: str, key: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.seen: list[tuple[str, str]] = []

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        resp = self.session.request(method, self.base + path, timeout=kw.pop("timeout", 120), **kw)
        ctype = resp.headers.get("content-type", "")
        # What was sent (an id Bob gives may come back in the message) and what came back.
        self.seen.append((f"{method} {path} {kw.get('data')} {kw.get('json')}",
                          f"{resp.status_code} {dict(resp.headers)} " + (resp.text if "json" in ctype else "")))
        return resp

    def get(self, path: str, **kw) -> requests.Response:
        return self("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self("POST", path, **kw)

    def wait(self, path: str, done, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(path).json()
            if done(body):
                return body
            time.sleep(0.2)
        raise AssertionError(f"{path} did not finish: {body}")


class Files:
    """A local web server for LatentSync's URL inputs; /slow/<name> answers after 3 s."""

    def __init__(self, folder):
        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/slow/"):
                    time.sleep(3)
                    self.path = self.path[len("/slow"):]
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=folder))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def keyed(seaweed, tmp_path_factory, training_video, speech):  # noqa: F811 - fixtures
    folder = tmp_path_factory.mktemp("isolation-web")
    (folder / "talk.mp4").write_bytes(training_video.read_bytes())
    (folder / "speech.wav").write_bytes(speech.read_bytes())
    files, chat = Files(str(folder)), ChatServer()
    try:
        with servers.fresh_bucket(seaweed.settings) as bucket, \
                servers.backend(bucket, fetch_allow_networks=["127.0.0.1/32"]) as back, \
                servers.gateway(back, require_api_keys=True, api_keys=KEYS, llm_base_url=chat.url,
                                llm_model="test-model",
                                # the prod settings but the rate limits, which this walk would reach
                                rate_limit_per_minute=0, create_rate_limit_per_minute=0) as url:
            yield Client(url, ALICE_KEY), Client(url, BOB_KEY), files.url
    finally:
        files.close()
        chat.close()


def _done(body: dict) -> bool:
    state = body["state"] if "state" in body else body.get("status", "")  # EchOfU has both
    return str(state).lower() in ("completed", "failed", "cancelled")


@pytest.mark.timeout(600)
def test_nothing_of_one_key_reaches_another(keyed, portrait, speech, training_video):  # noqa: F811
    alice, bob, web = keyed
    image, audio = portrait.read_bytes(), speech.read_bytes()
    dice_form = {"emotion": "happy", "min_resolution": "128", "seed": "7"}

    # -- Alice makes something on every API ------------------------------------------------------
    native = alice.post("/v1/jobs", data={"kind": "emotion", "emotion": "sad", "min_resolution": "128"},
                        files={"image": ("p.png", image), "audio": ("s.wav", audio)}, headers={"Idempotency-Key": "k1"})
    assert native.status_code == 201, native.text
    dice = alice.post("/api/v1/synthesis/start", data=dice_form, files={"image": ("p.png", image),
                                                                         "audio": ("s.wav", audio)}).json()
    mimic = alice.post("/generate_video", data={"width": "128", "height": "128"},
                       files={"reference_image": ("p.png", image), "audio_file": ("s.wav", audio)}).json()
    multi = alice.post("/generate_multi_videos", data={"width": "128", "height": "128", "combine_videos": "true"},
                       files=[("reference_image", ("p.png", image)), ("audio_files", ("a.wav", audio)),
                              ("audio_files", ("b.wav", audio))]).json()
    sync = alice.post("/sync", json={"video_url": f"{web}/talk.mp4", "audio_url": f"{web}/speech.wav"}).json()
    ids = {"native": native.json()["id"], "dice": dice["task_id"], "mimic": mimic["task_id"],
           "multi": multi["task_id"], "sync": sync["task_id"]}
    alice.wait(f"/v1/jobs/{ids['native']}", _done)
    alice.wait(f"/api/v1/synthesis/{ids['dice']}/status", _done)
    for name in ("mimic", "multi", "sync"):
        assert alice.wait(f"/task/{ids[name]}", _done)["status"] == "completed", name

    ref = alice.post("/api/upload-reference-audio", files={"audio": ("alice-ref.wav", _wav(ALICE_TEXT))}).json()
    shared_name = alice.post("/api/upload-reference-audio", files={"audio": ("voice.wav", audio)}).json()
    video = alice.post("/api/upload-training-video", files={"video": ("alice-talk.mp4",
                                                                       training_video.read_bytes())}).json()
    train = alice.post("/model_training", data={"ref_video": video["relative_path"]}).json()
    assert alice.wait(f"/api/train-status/{train['task_id']}", _done)["state"] == "completed"
    model = train["model_path"]
    clone = alice.post("/audio_clone", data={"original_audio_path": ref["relative_path"],
                                             "target_audio_id": "shared-speaker"}).json()
    alice_f0 = clone["profile"]["f0_median_hz"]
    spoken = alice.post("/audio_clone", data={"generate_text": ALICE_TEXT, "audio_id": "shared-speaker",
                                              "gen_audio_id": "alice-speech"}).json()
    generated = alice.post("/video_generation", data={"model_param": model, "ref_audio": ref["relative_path"]}).json()
    assert generated["status"] == "success", generated
    assert alice.post("/save_audio", files={"audio": ("q.wav", _wav(QUESTION))}).status_code == 200
    chat = alice.post("/chat_system", data={"model_param": model}).json()
    assert chat["status"] == "success", chat
    ids.update(train=train["task_id"], generate=generated["task_id"], chat=chat["task_id"])
    secrets = [*ids.values(), "alice-ref", "alice-talk", "alice-speech", ALICE_TEXT, QUESTION,
               model.rsplit("/", 1)[-1], generated["video_path"].rsplit("/", 1)[-1]]

    # -- Bob: native API, every task id of Alice's ----------------------------------------------
    listed = bob.get("/v1/jobs?limit=100").json()
    assert listed["data"] == []
    for task_id in ids.values():
        assert bob.get(f"/v1/jobs/{task_id}").status_code == 404
        assert bob.get(f"/v1/jobs/{task_id}/events").status_code == 404
        assert bob.get(f"/v1/jobs/{task_id}/outputs/video").status_code == 404
        assert bob.post(f"/v1/jobs/{task_id}/cancel").status_code == 404
        assert bob.get(f"/task/{task_id}").status_code == 404
        assert bob.get(f"/api/v1/synthesis/{task_id}/status").status_code == 404
        assert bob.get(f"/api/v1/synthesis/{task_id}/download").status_code == 404
        assert bob.get(f"/download/{task_id}").status_code == 404
        assert bob.get(f"/download_segment/{task_id}/0").status_code == 404
        assert bob.get(f"/download_combined/{task_id}").status_code == 404
        assert bob.get(f"/outputs/{task_id}/video.mp4").status_code == 404
        assert bob.get(f"/outputs/{task_id}/mask.mp4").status_code == 404
        assert bob.get(f"/results/{task_id}/output.mp4").status_code == 404
        assert bob.get(f"/output/videos/{task_id}_with_audio.mp4").status_code == 404
        assert bob.get(f"/api/task-status/{task_id}").status_code == 404
        assert bob.get(f"/api/train-status/{task_id}").status_code == 404
    # The same Idempotency-Key makes Bob a job of his own.
    again = bob.post("/v1/jobs", data={"kind": "emotion", "emotion": "sad", "min_resolution": "128"},
                     files={"image": ("p.png", image), "audio": ("s.wav", audio)}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 201 and again.json()["id"] != ids["native"]
    assert bob.get("/v1/webhooks/secret").json()["secret"] != alice.get("/v1/webhooks/secret").json()["secret"]

    # -- Bob: the result cache shares the work, not Alice's task -------------------------------
    cached = bob.post("/api/v1/synthesis/start", data=dice_form,
                      files={"image": ("p.png", image), "audio": ("s.wav", audio)}).json()
    assert cached["status"] == "COMPLETED" and cached["task_id"] != ids["dice"]
    assert bob.get(f"/v1/jobs/{cached['task_id']}").json()["params"].get("cached") is True
    assert bob.get(f"/api/v1/synthesis/{cached['task_id']}/download").status_code == 200
    assert alice.get(f"/api/v1/synthesis/{cached['task_id']}/download").status_code == 404

    # -- Bob: the LatentSync queue shows his tasks by id, Alice's only as counts ------------------
    slow = [alice.post("/sync", json={"video_url": f"{web}/slow/talk.mp4", "audio_url": f"{web}/speech.wav"}
                       ).json()["task_id"] for _ in range(4)]
    secrets += slow
    time.sleep(0.5)
    theirs, mine = bob.get("/queue").json(), alice.get("/queue").json()
    assert theirs["processing_tasks"] == [] and theirs["queued_tasks"] == []
    assert theirs["others_processing"] + theirs["others_queued"] >= 3 and theirs["queue_length"] >= 1
    assert set(mine["processing_tasks"]) | {t["task_id"] for t in mine["queued_tasks"]} <= set(slow)
    assert mine["others_processing"] == mine["others_queued"] == 0

    # -- Bob: EchOfU lists, details, history and files ------------------------------------------
    for path in ("/api/reference-audios", "/api/training-videos"):
        assert bob.get(path).json()["files"] == []
    assert bob.get("/api/available-models").json()["models"] == []
    assert bob.get("/api/cloned-audios").json()["audios"] == []
    assert bob.get(f"/api/model-details/talkface-person/{ids['train']}").status_code == 404
    assert bob.get("/api/model-details/talkface-person/root").status_code == 404
    for kind in ("video_generation", "model_training", "audio_clone", "chat_system"):
        assert bob.get(f"/api/history/{kind}").json() == []
    name = generated["video_path"].rsplit("/", 1)[-1]
    for path in (f"/video/{name}", f"/video/{generated['video_path']}", f"/{generated['video_path']}",
                 f"/static/voices/res_voices/{spoken['cloned_audio_path'].rsplit('/', 1)[-1]}", chat["response"],
                 f"/{ref['relative_path']}", chat["video_path"]):
        assert bob.get(path).status_code == 404, path
        assert alice.get(path).status_code == 200, path

    # -- Bob cannot use Alice's uploads, model, speaker or recording ----------------------------
    assert bob.post("/model_training", data={"ref_video": video["relative_path"]}).status_code == 404
    assert bob.post("/video_generation", data={"model_param": model, "target_text": "hi"}).status_code == 404
    assert bob.post("/video_generation", data={"target_text": "hi"}).status_code == 400  # no model of his own
    assert bob.post("/audio_clone", data={"original_audio_path": ref["relative_path"]}).status_code == 404
    assert bob.post("/audio_clone", data={"generate_text": "hi", "audio_id": "shared-speaker"}).status_code == 404
    assert bob.post("/chat_system", data={"model_param": model}).status_code == 400  # no recording of his own

    # -- Bob's own objects with Alice's names: his own, and hers stay as they were ---------------
    bob_voice = _wav("Bob speaks in a lower voice, and he reads this sentence slowly to the end.")
    own = bob.post("/api/upload-reference-audio", files={"audio": ("voice.wav", bob_voice)}).json()
    assert own["filename"] == shared_name["filename"] == "voice.wav"  # not voice_1.wav: hers is not in his way
    # The pages' preview of /static/voices/ref_voices/voice.wav plays each caller's own recording.
    assert bob.get("/" + own["relative_path"]).content == bob_voice
    assert alice.get("/" + shared_name["relative_path"]).content == audio
    bob_clone = bob.post("/audio_clone", data={"original_audio_path": own["relative_path"],
                                               "target_audio_id": "shared-speaker"}).json()
    assert bob_clone["status"] == "success", bob_clone
    speakers = alice.get("/api/cloned-audios").json()["audios"]
    assert [(s["id"], s["reference_audio"], s["f0_median_hz"]) for s in speakers] == [
        ("shared-speaker", ref["relative_path"], alice_f0)]
    assert bob.post("/save_audio", files={"audio": ("q.wav", _wav("Bob asks something else."))}).status_code == 200
    bob_video = bob.post("/api/upload-training-video", files={"video": ("bob.mp4", training_video.read_bytes())}).json()
    assert bob_video["filename"] == "bob.mp4"
    bob_train = bob.post("/model_training", data={"ref_video": bob_video["relative_path"]}).json()
    assert bob.wait(f"/api/train-status/{bob_train['task_id']}", _done)["state"] == "completed"
    assert bob.post("/video_generation", data={"model_param": bob_train["model_path"],
                                               "ref_audio": ref["relative_path"]}).status_code == 404
    assert bob.post("/video_generation", data={"target_text": "hi", "speaker_id": "shared-speaker"}
                    ).json()["status"] == "success"  # his own speaker of that name
    assert [m["name"] for m in bob.get("/api/available-models").json()["models"]] == [bob_train["task_id"]]
    # Alice's chat still hears her own question, not Bob's newer recording.
    assert alice.post("/chat_system", data={"model_param": model}).json()["question"] == chat["question"]

    for task_id in slow:
        assert alice.wait(f"/task/{task_id}", _done, timeout=120)["status"] == "completed"

    # -- Nothing Bob saw names anything of Alice's ----------------------------------------------
    leaks = [(secret, sent, answer[:300]) for sent, answer in bob.seen for secret in secrets
             if secret in answer and secret not in sent]
    assert not leaks, leaks
    assert len(bob.seen) > 150
