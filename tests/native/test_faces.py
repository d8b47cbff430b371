"""`/v1/jobs` checks a portrait's face when the job is created, for URL inputs too, and takes
`face_index` / `face_box` (JSON numbers and lists as well as form text)."""

from __future__ import annotations

import requests


def _post(api, **body):
    return requests.post(f"{api}/v1/jobs", json=body, timeout=60)


def test_a_faceless_image_url_is_refused_when_the_job_is_created(api, files):
    for kind in ("portrait", "emotion"):
        extra = {"emotion": "happy"} if kind == "emotion" else {}
        resp = _post(api, kind=kind, image_url=f"{files}/coffee.png", audio_url=f"{files}/speech.wav", **extra)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"] == {"code": "no_face", "message": "no face found in the portrait"}


def test_face_fields_in_json(api, files):
    urls = {"image_url": f"{files}/portrait.png", "audio_url": f"{files}/speech.wav"}
    missing = _post(api, kind="emotion", emotion="happy", face_index=1, **urls)
    assert missing.status_code == 422, missing.text
    error = missing.json()["error"]
    assert error["code"] == "no_such_face"
    assert "the portrait has 1 face " in error["message"], error
    by_index = _post(api, kind="emotion", emotion="happy", face_index=0, **urls)
    assert by_index.status_code == 201, by_index.text
    assert by_index.json()["params"]["face_index"] == 0
    by_box = _post(api, kind="portrait", face_box=[0, 0, 256, 256], **urls)
    assert by_box.status_code == 201, by_box.text
    assert by_box.json()["params"]["face_box"] == [0, 0, 256, 256]
    wrong = _post(api, kind="portrait", face_box=[0, 0, 256], **urls)
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_parameter"
