"""`talkserve live`: play a WAV file into a live session and save the face that came back.

Opens a WebRTC session with the gateway (services/live_client.py), sends the speech in real
time as a microphone would, keeps every video frame received, and writes them to a silent MP4
(the face; its sound is the file that was played). Prints what came back.
"""

from __future__ import annotations

import asyncio
import pathlib

import numpy as np

from services.live_client import LiveClient, LiveError, read_wav, save_mp4


class LiveCliError(Exception):
    """The session could not run; the message says why."""


async def _session(url: str, key: str | None, image: bytes, audio: np.ndarray, settings: dict, tail_s: float):
    client = LiveClient(url, key)
    session = await client.open(image, audio, **settings)
    await asyncio.sleep(audio.size / 16000 + tail_s)
    state = await client.state()
    await client.close()
    return client, session, state


def run(url: str, api_key: str | None, image: str, audio: str, out: str, size: int = 512, fps: int = 25,
        emotion: str = "neutral", tail_s: float = 1.0, say=print) -> int:
    """Play `audio` into a session on `image`; save the frames to `out`. Returns the frames saved."""
    try:
        picture = pathlib.Path(image).read_bytes()
        samples, _ = read_wav(audio)
    except OSError as exc:
        raise LiveCliError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except Exception as exc:  # noqa: BLE001 - an undecodable audio file
        raise LiveCliError(str(exc)) from exc
    say(f"playing {len(samples) / 16000:.1f} s of speech into a live session at {url} ...")
    try:
        client, session, state = asyncio.run(_session(url, api_key, picture, samples,
                                                      {"width": size, "height": size, "fps": fps,
                                                       "emotion": emotion}, tail_s))
    except LiveError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise LiveCliError(f"the server refused the session (HTTP {exc.status}): "
                           f"{body.get('error', {}).get('message', exc.body)}") from exc
    except OSError as exc:
        raise LiveCliError(f"cannot reach {url}: {exc}") from exc
    frames = client.received.frames
    if not frames:
        raise LiveCliError("the session sent no video")
    span = frames[-1][0] - frames[0][0]
    pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
    saved = save_mp4(client.received, out, session["fps"])
    say(f"session {session['session_id']}: {session['width']}x{session['height']} by {session['engine']} "
        f"on {state['replica']} ({state['failovers']} failovers)")
    say(f"received {len(frames)} frames ({len(frames) / span if span > 0 else 0:.1f} fps) and "
        f"{client.received.audio_frames} audio frames; saved the face to {out}")
    return saved
