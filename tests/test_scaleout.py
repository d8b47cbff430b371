"""Two echomimic replicas behind one gateway (real processes): a multi-audio job uses both."""

import re
import time

import requests
from PIL import Image
from skimage import data

from libs.speech.espeak import synthesize, write_wav
from services.stack import Stack, free_port


def test_multi_audio_segments_spread_over_two_replicas(tmp_path):
    portrait = tmp_path / "face.png"
    Image.fromarray(data.astronaut()).save(portrait)
    audio = []
    for i in range(4):
        path = tmp_path / f"part{i}.wav"
        write_wav(synthesize(f"This is part number {i + 1} of the talk."), path)
        audio.append(path)
    stack = Stack(data_dir=tmp_path / "stack", gateway_ports=[free_port()],
                  replicas={"echomimic": 2, "dicetalk": 1, "latentsync": 0},
                  extra_env={"TALKSERVE_ECHOMIMIC_SLOTS": "1"})
    with stack:
        files = [("reference_image", ("face.png", open(portrait, "rb"), "image/png"))]
        files += [("audio_files", (p.name, open(p, "rb"), "audio/wav")) for p in audio]
        resp = requests.post(f"{stack.url}/generate_multi_videos", files=files,
                             data={"combine_videos": "true", "width": "256", "height": "256"})
        for _, (_, fh, _) in files:
            fh.close()
        task_id = resp.json()["task_id"]
        deadline = time.monotonic() + 240
        while (status := requests.get(f"{stack.url}/task/{task_id}").json())["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert status["status"] == "completed", status
        assert len(status["output_files"]) == 4 and status["combined_output_file"]
    per_replica = {}
    for i in range(2):
        log = (tmp_path / "stack" / "logs" / f"echomimic-{i}.log").read_text()
        per_replica[i] = set(re.findall(rf"job {task_id}-(\d) finished", log))
    assert per_replica[0] and per_replica[1], f"segments were not spread: {per_replica}"
    assert per_replica[0] | per_replica[1] == {"0", "1", "2", "3"}
    assert not per_replica[0] & per_replica[1]
