"""The `talkserve` command: start the local stack, or run one real job end to end.

  talkserve up      start every service locally and serve until Ctrl-C
  talkserve demo    start the stack, animate a portrait from synthesised speech, save the MP4
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import signal
import sys
import tempfile
import threading
import time

import httpx

from services.stack import ROOT, Stack, free_port

DEMO_TEXT = ("Hello! I am a portrait brought to life by talkserve. "
             "My lips follow every word you hear, and my eyes blink now and then.")


def _up(args: argparse.Namespace) -> int:
    stack = Stack(data_dir=pathlib.Path(args.data_dir), host=args.host, gateway_ports=args.ports)
    sys.stderr.write("starting the object store, media, echomimic, dicetalk, latentsync and gateway...\n")
    with stack:
        sys.stderr.write(f"talkserve is up: {stack.url} (also on ports {args.ports[1:]}); "
                         f"API docs at {stack.url}/docs; logs in {args.data_dir}/logs. Ctrl-C stops.\n")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        sys.stderr.write("stopping...\n")
    return 0


def make_demo_inputs(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """A real portrait (scikit-image's astronaut) and real synthesised speech."""
    from PIL import Image
    from skimage import data

    from libs.speech.espeak import synthesize, write_wav

    portrait = folder / "portrait.png"
    Image.fromarray(data.astronaut()).save(portrait)
    speech = folder / "speech.wav"
    write_wav(synthesize(DEMO_TEXT, voice="en"), speech)
    return portrait, speech


def run_dicetalk_job(base_url: str, portrait: pathlib.Path, speech: pathlib.Path, out: pathlib.Path,
                     emotion: str = "happy", poll: float = 0.5) -> dict:
    """Submit one DICE-Talk job, follow it, download the result; returns the final status."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        with open(portrait, "rb") as img, open(speech, "rb") as aud:
            resp = client.post("/api/v1/synthesis/start", files={"image": img, "audio": aud},
                               data={"emotion": emotion, "min_resolution": "512", "seed": "7"})
        resp.raise_for_status()
        task_id = resp.json()["task_id"]
        last = None
        while True:
            status = client.get(f"/api/v1/synthesis/{task_id}/status").json()
            line = f"{status['status']:<10} {status['progress'] * 100:5.1f}%  {status['message']}"
            if line != last:
                sys.stderr.write(line + "\n")
                last = line
            if status["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(poll)
        if status["status"] != "COMPLETED":
            raise SystemExit(f"the job failed: {status['message']}")
        out.parent.mkdir(parents=True, exist_ok=True)
        with client.stream("GET", f"/api/v1/synthesis/{task_id}/download") as dl, open(out, "wb") as fh:
            dl.raise_for_status()
            for chunk in dl.iter_bytes():
                fh.write(chunk)
    return status


def describe(path: pathlib.Path) -> str:
    import av

    with av.open(str(path)) as container:
        parts = []
        for stream in container.streams:
            seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
            extra = f" {stream.width}x{stream.height}" if stream.type == "video" else ""
            parts.append(f"{stream.type} {stream.codec_context.name}{extra} {seconds:.2f} s")
    return ", ".join(parts)


def _demo(args: argparse.Namespace) -> int:
    out = pathlib.Path(args.out).resolve()
    ports = [free_port(args.host), free_port(args.host)]
    with tempfile.TemporaryDirectory(prefix="talkserve-demo-") as tmp:
        portrait, speech = make_demo_inputs(pathlib.Path(tmp))
        sys.stderr.write("starting the local stack (object store, 5 gRPC services, gateway)...\n")
        with Stack(data_dir=pathlib.Path(args.data_dir), host=args.host, gateway_ports=ports) as stack:
            sys.stderr.write(f"gateway at {stack.url}; submitting a DICE-Talk job\n")
            started = time.monotonic()
            run_dicetalk_job(stack.url, portrait, speech, out)
            took = time.monotonic() - started
    sys.stderr.write(f"done in {took:.1f} s: {out}\n  {describe(out)}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkserve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address every service binds (default 127.0.0.1)")
    parser.add_argument("--data-dir", default=str(ROOT / ".talkserve"),
                        help="where the local object store keeps its data and services their logs")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack and serve until Ctrl-C")
    up.add_argument("--ports", type=int, nargs="+", default=[8000, 7688],
                    help="gateway ports (default: 8000 7688, the ports of the documented APIs)")
    up.set_defaults(func=_up)
    demo = sub.add_parser("demo", help="run one real job end to end and save the MP4")
    demo.add_argument("--out", default=str(ROOT / "out" / "demo.mp4"), help="where to save the video")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
