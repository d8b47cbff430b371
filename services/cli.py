"""The `talkserve` command: run the local stack, and make talking videos with it from a terminal.

Start the service on this machine (leave it running in its own terminal):

  talkserve up                       object store, media, model services and gateway on :8000
                                     (web page at http://127.0.0.1:8000/)

Make videos (each command talks to --url, default http://127.0.0.1:8000):

  talkserve submit emotion --image me.jpg --audio hello.wav --emotion happy
  talkserve submit portrait --image me.jpg --audio hello.wav
  talkserve submit redub --video talk.mp4 --audio new-words.wav
  talkserve list                     your recent jobs
  talkserve status JOB_ID            where a job is (the id, or its first 8 characters)
  talkserve wait JOB_ID              follow a job with a progress bar, then download it
  talkserve download JOB_ID -o a.mp4 save a finished job's video (--result mask: the re-dub's mask)
  talkserve cancel JOB_ID            stop a job
  talkserve live --image me.jpg --audio hello.wav -o live.mp4
                                     play the speech into a live session, save the face

  talkserve demo                     start the stack, make one video, save out/demo.mp4, stop

Files can be local paths or http(s) URLs. A server that needs an API key reads it from
--api-key or the TALKSERVE_API_KEY environment variable; --url can also come from TALKSERVE_URL.
Both may stand before the command or after it. Jobs start from the web page's defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
from typing import Iterator

import httpx

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_URL = "http://127.0.0.1:8000"
KINDS = ("portrait", "emotion", "redub")
EMOTIONS = ("neutral", "happy", "sad", "surprised", "angry", "disgusted", "fear", "contempt")
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}

# What the web page starts with, so a job made from the terminal looks like one made there.
PAGE_DEFAULTS = {
    "emotion": {"emotion": "happy", "emo_scale": "6", "min_resolution": "512", "fps": "24"},
    "portrait": {"width": "512", "height": "512", "fps": "24"},
    "redub": {},
}

DEMO_TEXT = ("Hello! I am a portrait brought to life by talkserve. "
             "My lips follow every word you hear, and my eyes blink now and then.")


def out(text: str) -> None:
    """Results a script may read (paths, ids, JSON) go to stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    """Everything meant for the person at the terminal goes to stderr."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class CliError(Exception):
    """Something the user should read, then exit 1."""


# -- the local stack --------------------------------------------------------------------------------


def _start_stack(stack):
    """Start the stack; a service that fails to start becomes a CliError quoting its log."""
    from services.stack import StackStartError

    try:
        return stack.start()
    except StackStartError as exc:
        raise CliError(str(exc)) from exc


def _up(args: argparse.Namespace) -> int:
    from services.stack import Stack

    stack = Stack(data_dir=pathlib.Path(args.data_dir), host=args.host, gateway_ports=args.ports)
    say("starting the object store, the media and model services and the gateway (a minute or so)...")
    with _start_stack(stack):
        say(f"talkserve is up at {stack.url} (also on ports {args.ports[1:]})\n"
            f"  web page:  {stack.url}/\n"
            f"  API docs:  {stack.url}/docs\n"
            f"  try:       talkserve submit emotion --image face.jpg --audio speech.wav --emotion happy\n"
            f"  logs:      {args.data_dir}/logs\n"
            "Ctrl-C stops everything.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        say("stopping...")
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


def run_dicetalk_job(base_url: str, portrait: pathlib.Path, speech: pathlib.Path, out_path: pathlib.Path,
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
                say(line)
                last = line
            if status["status"] in ("COMPLETED", "FAILED"):
                break
            time.sleep(poll)
        if status["status"] != "COMPLETED":
            raise SystemExit(f"the job failed: {status['message']}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with client.stream("GET", f"/api/v1/synthesis/{task_id}/download") as dl, open(out_path, "wb") as fh:
            dl.raise_for_status()
            for chunk in dl.iter_bytes():
                fh.write(chunk)
    return status


def describe(path: pathlib.Path) -> str:
    import av

    with av.open(str(path)) as container:
        parts = []
        for stream in container.streams:
            seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0  # type: ignore[operator]
            extra = f" {stream.width}x{stream.height}" if stream.type == "video" else ""  # type: ignore[attr-defined]
            parts.append(f"{stream.type} {stream.codec_context.name}{extra} {seconds:.2f} s")
    return ", ".join(parts)


def _demo(args: argparse.Namespace) -> int:
    from services.stack import Stack, free_port

    out_path = pathlib.Path(args.out).resolve()
    ports = [free_port(args.host), free_port(args.host)]
    with tempfile.TemporaryDirectory(prefix="talkserve-demo-") as tmp:
        portrait, speech = make_demo_inputs(pathlib.Path(tmp))
        say("starting the local stack (object store, gRPC services, gateway)...")
        with _start_stack(Stack(data_dir=pathlib.Path(args.data_dir), host=args.host, gateway_ports=ports)) as stack:
            say(f"gateway at {stack.url}; submitting a DICE-Talk job")
            started = time.monotonic()
            run_dicetalk_job(stack.url, portrait, speech, out_path)
            took = time.monotonic() - started
    say(f"done in {took:.1f} s: {out_path}\n  {describe(out_path)}")
    return 0


# -- the client -------------------------------------------------------------------------------------


def error_message(resp: httpx.Response) -> str:
    """What went wrong, from any of the gateway's error shapes."""
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        text = err.get("message", "")
    elif isinstance(err, str):
        text = err
    else:
        detail = body.get("detail") if isinstance(body, dict) else body
        text = detail if isinstance(detail, str) else json.dumps(detail)
    if resp.status_code == 401:
        text += " (give a key with --api-key or TALKSERVE_API_KEY)"
    if resp.status_code == 429:
        text += f" (the server asks to wait {resp.headers.get('Retry-After', 'a few')} s)"
    return text


def normalise_url(url: str) -> str:
    """The server's base URL; `127.0.0.1:8000` or `localhost` mean http://."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


class Client:
    """A thin client of talkserve's own API (/v1)."""

    def __init__(self, url: str, api_key: str | None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = normalise_url(url)
        self.http = httpx.Client(base_url=self.url, headers=headers,
                                 timeout=httpx.Timeout(60.0, connect=10.0))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs) -> dict:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach talkserve at {self.url} ({exc.__class__.__name__}). "
                           "Is it running? Start it with `talkserve up`, or point --url at it.") from exc
        if resp.status_code >= 400:
            raise CliError(error_message(resp))
        return resp.json()

    def job(self, job_id: str) -> dict:
        """A job by its id, or by the start of it (the 8 characters in the file names this
        command saves) when that start is one job's alone."""
        job_id = job_id.strip()
        if len(job_id) >= 32:
            return self.request("GET", f"/v1/jobs/{job_id}")
        if len(job_id) < 4:
            raise CliError(f"{job_id!r} is too short to name a job: give at least 4 characters of its id")
        found, cursor = [], None
        while True:
            params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
            page = self.request("GET", "/v1/jobs", params=params)
            found += [j for j in page["data"] if j["id"].startswith(job_id)]
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor or len(found) > 1:
                break
        if not found:
            raise CliError(f"no job of yours has an id starting with {job_id}")
        if len(found) > 1:
            raise CliError(f"{job_id} starts the ids of several jobs: "
                           + ", ".join(j["id"] for j in found[:5]) + "; give more of it")
        return self.request("GET", f"/v1/jobs/{found[0]['id']}")

    def create(self, fields: dict[str, str], files: dict[str, pathlib.Path]) -> dict:
        handles = {name: open(path, "rb") for name, path in files.items()}
        try:
            upload = {name: (path.name, handles[name]) for name, path in files.items()}
            if upload:
                return self.request("POST", "/v1/jobs", data=fields, files=upload,
                                    timeout=httpx.Timeout(600.0, connect=10.0))
            return self.request("POST", "/v1/jobs", json=fields, timeout=httpx.Timeout(600.0, connect=10.0))
        finally:
            for fh in handles.values():
                fh.close()

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[tuple[str, str | None, dict]]:
        """(event, id, data) from the job's event stream; reconnects with Last-Event-ID when dropped."""
        for _attempt in range(20):
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(60.0, connect=10.0)) as resp:
                    if resp.status_code == 204:
                        return
                    if resp.status_code >= 400:
                        resp.read()
                        raise CliError(error_message(resp))
                    for event, event_id, data in parse_sse(resp.iter_lines()):
                        if event_id:
                            last_event_id = event_id
                        yield event, event_id, data
                        if event in ("completed", "failed", "cancelled"):
                            return
            except (httpx.TransportError, httpx.StreamError):
                pass  # dropped: resume after the last event seen
            time.sleep(1.0)
        raise CliError("lost the connection to the server too many times while following the job")

    def download(self, job_id: str, name: str, dest: pathlib.Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/outputs/{name}",
                                  timeout=httpx.Timeout(600.0, connect=10.0)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise CliError(error_message(resp))
                size = 0
                with open(part, "wb") as fh:
                    for chunk in resp.iter_bytes():
                        fh.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            part.unlink(missing_ok=True)
            raise CliError(f"the download was interrupted ({exc.__class__.__name__}); run the command again") from exc
        part.replace(dest)
        return size


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str | None, dict]]:
    """Server-Sent Events from a stream of lines: (event type, id, JSON data)."""
    event, event_id, data = "message", None, []  # type: ignore[var-annotated]
    for line in lines:
        if line == "":
            if data:
                yield event, event_id, json.loads("\n".join(data))
            event, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id":
            event_id = value


class ProgressBar:
    """One self-rewriting line on a terminal; a line per change otherwise (logs, CI)."""

    WIDTH = 28

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def update(self, data: dict) -> None:
        fraction = float(data.get("progress") or 0.0)
        filled = int(round(fraction * self.WIDTH))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"[{bar}] {fraction * 100:5.1f}%  {describe_progress(data)}"
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self.last)))
        elif line != self.last:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def done(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


def describe_progress(data: dict) -> str:
    if data.get("status") == "PENDING":
        pos = data.get("queue_position")
        return "waiting in the queue" + (f" ({pos} ahead)" if pos else "")
    text = data.get("message") or "working"
    if data.get("stage") == "rendering" and data.get("total"):
        text = f"rendering frame {data['done']}/{data['total']}"
    if data.get("eta_seconds") is not None:
        text += f", about {max(0, round(data['eta_seconds']))} s left"
    return text


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    client = Client(args.url, args.api_key)
    try:
        yield client
    finally:
        client.close()


def _follow(client: Client, job: dict) -> dict:
    """Show the job's progress until it ends; returns the final job."""
    bar = ProgressBar()
    bar.update({"progress": job.get("progress", 0), "status": job["status"], "message": job.get("message"),
                "queue_position": job.get("queue_position")})
    final = None
    try:
        for event, _id, data in client.events(job["id"]):
            if event == "progress":
                bar.update(data)
            elif event in ("completed", "failed", "cancelled"):
                if event == "completed":
                    bar.update({"progress": 1.0, "status": "COMPLETED", "message": "done"})
                final = data
    finally:
        bar.done()
    return final or client.request("GET", f"/v1/jobs/{job['id']}")


def _default_out(job: dict, name: str) -> pathlib.Path:
    return pathlib.Path(f"{job['kind']}-{job['id'][:8]}{'' if name == 'video' else '-' + name}.mp4")


def _finish(client: Client, job: dict, args: argparse.Namespace) -> int:
    """Report the final job; download its video unless told not to."""
    if job["status"] != "COMPLETED":
        reason = job.get("error") or job.get("message") or "no reason given"
        say(f"job {job['id']} {job['status'].lower()}: {reason}")
        return 1
    if getattr(args, "no_download", False):
        out(job["id"])
        return 0
    if not job["outputs"]:
        raise CliError(f"job {job['id']} finished without any output")
    name = args.result
    if name not in job["outputs"]:
        raise CliError(f"job {job['id']} has no {name} to save; it has: {', '.join(job['outputs'])} "
                       "(choose one with --result)")
    dest = pathlib.Path(args.out) if args.out else _default_out(job, name)
    size = client.download(job["id"], name, dest)
    result = job.get("result") or {}
    facts = (f", {result['duration_seconds']:.1f} s at {result['width']}x{result['height']}"
             if result.get("duration_seconds") else "")
    say(f"saved {dest} ({size / 1e6:.1f} MB{facts}); made by {job.get('engine') or 'talkserve'}")
    out(str(dest))
    return 0


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _submit(args: argparse.Namespace) -> int:
    needs = ("video", "audio") if args.kind == "redub" else ("image", "audio")
    fields: dict[str, str] = {"kind": args.kind}
    files: dict[str, pathlib.Path] = {}
    for name in ("image", "video", "audio"):
        value = getattr(args, name)
        if value is None:
            if name in needs:
                raise CliError(f"{args.kind} needs --{name} (a file or an http(s) URL)")
            continue
        if name not in needs:
            raise CliError(f"{args.kind} does not take --{name}; it takes --{' and --'.join(needs)}")
        if _is_url(value):
            fields[f"{name}_url"] = value
        else:
            path = pathlib.Path(value).expanduser()
            if not path.is_file():
                raise CliError(f"--{name}: no such file: {value}")
            files[name] = path
    fields.update(PAGE_DEFAULTS[args.kind])
    if args.emotion:
        if args.kind != "emotion":
            raise CliError("--emotion is for `submit emotion` jobs")
        fields["emotion"] = args.emotion
    if args.seed is not None:
        fields["seed"] = str(args.seed)
    if args.webhook:
        fields["webhook_url"] = args.webhook
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--set takes NAME=VALUE, not {item!r}")
        fields[key.strip()] = value
    with _client(args) as client:
        if files:
            say(f"uploading {', '.join(p.name for p in files.values())} to {client.url}...")
        job = client.create(fields, files)
        say(f"job {job['id']} created ({job['kind']}); follow it later with: talkserve wait {job['id']}")
        if args.no_wait:
            out(job["id"])
            return 0
        return _finish(client, _follow(client, job), args)


def _status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job_id)
    if args.json:
        out(json.dumps(job, indent=2))
        return 0
    lines = [f"job       {job['id']} ({job['kind']}, created {job['created_at']})",
             f"status    {job['status']}  {job['progress'] * 100:.1f}%  {describe_progress(job)}"]
    if job.get("engine"):
        lines.append(f"engine    {job['engine']}")
    if job.get("error"):
        lines.append(f"error     {job['error']}")
    for name, link in job.get("outputs", {}).items():
        # Read just now, so fresh; links the gateway signs are relative to it.
        lines.append(f"{name:<9} {urllib.parse.urljoin(client.url + '/', link['url'])}")
    out("\n".join(lines))
    return 0


def _wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job_id)
        if job["status"] not in FINAL:
            job = _follow(client, job)
        return _finish(client, job, args)


def _download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job_id)
        if job["status"] not in FINAL:
            raise CliError(f"job {job['id']} is {job['status'].lower()}; `talkserve wait {job['id']}` "
                           "follows it and downloads the video when it is done")
        return _finish(client, job, args)


def _cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.request("POST", f"/v1/jobs/{client.job(args.job_id)['id']}/cancel")
    say(f"job {job['id']} cancelled")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        params = {"limit": args.limit}
        if args.status:
            params["status"] = args.status.upper()
        page = client.request("GET", "/v1/jobs", params=params)
    if args.json:
        out(json.dumps(page, indent=2))
        return 0
    if not page["data"]:
        say("no jobs yet; make one with `talkserve submit emotion --image face.jpg --audio speech.wav`")
        return 0
    out(f"{'JOB ID':<36}  {'KIND':<8}  {'STATUS':<10}  {'PROGRESS':>8}  CREATED")
    for job in page["data"]:
        out(f"{job['id']:<36}  {job['kind']:<8}  {job['status']:<10}  {job['progress'] * 100:7.1f}%  "
            f"{job['created_at']}")
    if page["has_more"]:
        say(f"(more: talkserve list --limit {min(100, args.limit * 2)})")
    return 0


# -- the command line -------------------------------------------------------------------------------


class _Help(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkserve", description=__doc__, formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--host", default="127.0.0.1", help="address every service binds (default 127.0.0.1)")
    local.add_argument("--data-dir", default=str(ROOT / ".talkserve"),
                       help="where the local object store keeps its data and the services their logs")

    # --url and --api-key work before the command and after it alike: the command's own copy
    # leaves the value alone unless it is given there (SUPPRESS), so either place wins
    for where, default in ((parser, True), (remote := argparse.ArgumentParser(add_help=False), False)):
        where.add_argument("--url", default=(os.environ.get("TALKSERVE_URL") or DEFAULT_URL) if default
                           else argparse.SUPPRESS,
                           help=f"the talkserve server (env TALKSERVE_URL; default {DEFAULT_URL})")
        where.add_argument("--api-key", default=os.environ.get("TALKSERVE_API_KEY") if default else argparse.SUPPRESS,
                           help="your API key, if the server needs one (env TALKSERVE_API_KEY)")

    saving = argparse.ArgumentParser(add_help=False)
    saving.add_argument("-o", "--output", "--out", dest="out", metavar="PATH",
                        help="where to save the video (default: <kind>-<job id>.mp4 here)")
    saving.add_argument("--result", default="video",
                        help="which result to save: video (default), mask (redub), combined, segment_0, ...")

    up = sub.add_parser("up", parents=[local], formatter_class=_Help,
                        help="start talkserve on this machine and keep it running until Ctrl-C",
                        description="Start the object store, the media service, the model services and the "
                                    "gateway as local processes, and serve until Ctrl-C.")
    up.add_argument("--ports", type=int, nargs="+", default=[8000, 7688],
                    help="gateway ports (default: 8000 7688, the ports of the documented APIs)")
    up.set_defaults(func=_up)

    demo = sub.add_parser("demo", parents=[local], formatter_class=_Help,
                          help="start talkserve, make one video end to end, save it, stop",
                          description="A self-contained check that everything works: starts the stack on free "
                                      "ports, animates a portrait with synthesised speech, saves the MP4.")
    demo.add_argument("--out", default=str(ROOT / "out" / "demo.mp4"), help="where to save the video")
    demo.set_defaults(func=_demo)

    submit = sub.add_parser(
        "submit", parents=[remote, saving], formatter_class=_Help,
        help="make a video: portrait, emotion or redub",
        description="Send a job, show its progress, and download the video when it is done.\n\n"
                    "kinds:\n"
                    "  portrait  a portrait and speech become a talking video        (--image, --audio)\n"
                    "  emotion   the same, with an emotion (happy, sad, surprised...) (--image, --audio, --emotion)\n"
                    "  redub     a video gets new speech, its lips re-synced          (--video, --audio)\n\n"
                    "examples:\n"
                    "  talkserve submit emotion --image me.jpg --audio hi.wav --emotion happy\n"
                    "  talkserve submit portrait --image me.png --audio https://example.com/hi.mp3 --set fps=30\n"
                    "  talkserve submit redub --video talk.mp4 --audio dub.wav -o dubbed.mp4\n"
                    "  talkserve submit emotion --image me.jpg --audio hi.wav --set min_resolution=256 --no-wait")
    submit.add_argument("kind", choices=KINDS, help="portrait, emotion or redub")
    submit.add_argument("--image", metavar="FILE|URL", help="the portrait (JPEG, PNG, WEBP, BMP)")
    submit.add_argument("--audio", metavar="FILE|URL", help="the speech (WAV, MP3, FLAC, OGG, M4A, ...)")
    submit.add_argument("--video", metavar="FILE|URL", help="the video to re-dub (redub only)")
    submit.add_argument("--emotion", choices=EMOTIONS,
                        help=f"emotion jobs only (default: {PAGE_DEFAULTS['emotion']['emotion']}, as on the web page)")
    submit.add_argument("--seed", type=int, help="same seed and inputs, same video")
    submit.add_argument("--set", action="append", metavar="NAME=VALUE",
                        help="any other parameter, e.g. fps=30, min_resolution=256, width=512 "
                             "(see http://127.0.0.1:8000/docs)")
    submit.add_argument("--webhook", metavar="URL", help="a URL that receives the final state (signed)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit.add_argument("--no-download", action="store_true", help="wait, but do not download the video")
    submit.set_defaults(func=_submit)

    status = sub.add_parser("status", parents=[remote], formatter_class=_Help, help="show where a job is",
                            description="Show a job's status, progress, engine and result links.")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the whole job as JSON")
    status.set_defaults(func=_status)

    wait = sub.add_parser("wait", parents=[remote, saving], formatter_class=_Help,
                          help="follow a job with a progress bar, then download its video",
                          description="Follow a job until it ends, then download its video.")
    wait.add_argument("job_id")
    wait.add_argument("--no-download", action="store_true", help="only wait")
    wait.set_defaults(func=_wait)

    download = sub.add_parser("download", parents=[remote, saving], formatter_class=_Help,
                              help="save a finished job's video", description="Save a finished job's video.")
    download.add_argument("job_id")
    download.set_defaults(func=_download)

    cancel = sub.add_parser("cancel", parents=[remote], formatter_class=_Help, help="stop a waiting or running job",
                            description="Stop a waiting or running job.")
    cancel.add_argument("job_id")
    cancel.set_defaults(func=_cancel)

    live = sub.add_parser("live", parents=[remote], formatter_class=_Help,
                          help="play a WAV into a live session and save the face that came back",
                          description="Open a live session (WebRTC), play the speech into it in real time, and "
                                      "save the face it sent back as a silent MP4.\n\nexample:\n"
                                      "  talkserve live --image me.jpg --audio hello.wav -o out/live.mp4")
    live.add_argument("--image", required=True, metavar="FILE", help="the portrait")
    live.add_argument("--audio", required=True, metavar="FILE", help="the speech, played in real time")
    live.add_argument("-o", "--output", "--out", dest="out", default="live.mp4", metavar="PATH",
                      help="where to save the face (default live.mp4)")
    live.add_argument("--size", type=int, default=512, help="width and height in pixels (default 512)")
    live.add_argument("--emotion", choices=EMOTIONS, default="neutral")
    live.set_defaults(func=_live)

    listing = sub.add_parser("list", parents=[remote], formatter_class=_Help, help="list your recent jobs",
                             description="List your jobs, newest first.")
    listing.add_argument("--limit", type=int, default=20, help="how many (1 to 100, default 20)")
    listing.add_argument("--status", help="only jobs in this status: pending, processing, completed, failed, "
                                          "cancelled")
    listing.add_argument("--json", action="store_true", help="print the page as JSON")
    listing.set_defaults(func=_list)
    return parser


def _live(args) -> int:
    from services.cli_live import LiveCliError, run

    try:
        run(args.url, args.api_key, args.image, args.audio, args.out, size=args.size, emotion=args.emotion, say=say)
    except LiveCliError as exc:
        raise CliError(str(exc)) from exc
    out(args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CliError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        job = getattr(args, "job_id", None)
        say("\nstopped following" + (f"; the job goes on: talkserve wait {job}" if job else ""))
        return 130


if __name__ == "__main__":
    sys.exit(main())
