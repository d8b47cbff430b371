"""Benchmark: status polling under load while jobs generate on the same machine.

`wrk` (100 connections, --latency) polls `GET /api/v1/synthesis/{id}/status` for ~15 s while a
driver thread keeps one DICE-Talk job generating at all times (10 s of speech, 512x512, 24 fps:
when a job ends the next is submitted). Measured on two servers, one after the other:

  gateway   talkserve's full local stack (gateway, SeaweedFS, media, model services);
  baseline  bench/baseline_echomimic_style.py: a FastAPI app that keeps tasks in a dict and
            runs the same `Engine.generate` in an async background task on its event loop,
            as the EchoMimic wrapper does.

Reports requests/s, p50/p90/p99 latency, errors, the CPU seconds each process used in the
window, and how many jobs finished during it. When the gateway misses a target, a second
window is run under `py-spy record` of the gateway process and the samples are summarised:
where the gateway's CPU time goes (samples of the thread holding the GIL), and one
store GET of a task record is timed on its own from this process.

    python -m bench.bench_polling [--connections 100] [--duration 15] [--json PATH] [--profile-out PATH]
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import (ROOT, cpu_seconds, load_note, log, row, service_pid, stack, status, submit,
                          write_portrait, write_result, write_speech)
from bench.ensure_tools import ToolMissing, ensure, which

BENCH = "Status polling"
TARGET_RPS = 1000.0
TARGET_P99_MS = 100.0


# -- wrk ----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    """Requests/s, latency percentiles (ms), request count and errors from `wrk --latency` output."""
    res: dict = {"percentiles_ms": {}}
    dist = re.search(r"Latency Distribution\s*\n((?:\s+[0-9.]+%\s+\S+\s*\n)+)", out)
    if dist:
        for pct, val in re.findall(r"([0-9.]+)%\s+(\S+)", dist.group(1)):
            res["percentiles_ms"][f"p{float(pct):g}"] = round(_ms(val), 3)
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    res["requests_per_s"] = float(m.group(1)) if m else 0.0
    m = re.search(r"([0-9]+) requests in ([0-9.]+\w+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", out)
    res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: ([0-9]+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"([0-9]+) requests in ([0-9.]+)(us|ms|s|m),", out)
    if m:
        seconds = _ms(m.group(2) + m.group(3)) / 1000
        res["ok_per_s"] = round((res["requests"] - res["non_2xx"]) / seconds, 2) if seconds else 0.0
    m = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    if m:
        res["latency_avg_ms"], res["latency_max_ms"] = round(_ms(m.group(1)), 3), round(_ms(m.group(3)), 3)
    return res


def run_wrk(wrk: str, url: str, connections: int, duration: float, threads: int) -> tuple[dict, str]:
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(round(duration))}s", "--timeout", "10s",
           "--latency", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}")
    return parse_wrk(done.stdout), done.stdout


# -- keeping a job running ----------------------------------------------------------------------

class JobDriver(threading.Thread):
    """Keeps one job generating on `base_url`: submit, poll every 0.2 s, submit the next when done."""

    def __init__(self, base_url: str, portrait: pathlib.Path, speech: pathlib.Path, seed0: int):
        super().__init__(daemon=True)
        self.base_url, self.portrait, self.speech = base_url, portrait, speech
        self.seed = seed0
        self.stop = threading.Event()
        self.first_id: str | None = None
        self.started = threading.Event()
        self.finished: list[float] = []  # completion times (monotonic)
        self.error: BaseException | None = None

    def run(self) -> None:
        import httpx

        try:
            with httpx.Client(base_url=self.base_url, timeout=120) as client:
                while not self.stop.is_set():
                    self.seed += 1
                    task_id = submit(client, self.portrait, self.speech, self.seed, min_resolution=512)
                    if self.first_id is None:
                        self.first_id = task_id
                    while not self.stop.is_set():
                        st = status(client, task_id)
                        if st["status"] in ("PROCESSING", "COMPLETED", "FAILED"):
                            self.started.set()
                        if st["status"] in ("COMPLETED", "FAILED"):
                            if st["status"] == "FAILED":
                                raise RuntimeError(f"job failed: {st['message']}")
                            self.finished.append(time.monotonic())
                            break
                        time.sleep(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.started.set()


# -- py-spy -------------------------------------------------------------------------------------

# Each sample goes to the category of the innermost frame that matches one (walking from the
# leaf towards the root), so the shares add up to 100 %.
CATEGORIES = [
    ("object-store round trip (minio, urllib3, http.client, socket, retry)",
     ("minio/", "urllib3/", "http/client.py", "socket.py", "tenacity/", "libs/store/")),
    ("task record parsing (libs/tasks.py)", ("libs/tasks.py",)),
    ("gateway middleware: API keys and rate limit (services/gateway/auth.py)", ("services/gateway/auth.py",)),
    ("gateway route code (services/gateway/routers/)", ("services/gateway/routers/",)),
    ("gateway background threads (dispatcher, pipeline, kinds, retention, events)",
     ("services/gateway/dispatcher.py", "services/gateway/outcomes.py", "services/gateway/queues.py",
      "services/gateway/recovery.py", "services/gateway/pipeline.py", "services/gateway/kinds/",
      "services/gateway/retention.py", "services/gateway/events.py")),
    ("other gateway code (services/, libs/)", ("services/", "libs/")),
    ("pydantic (validation, JSON serialisation)", ("pydantic/", "pydantic_core")),
    ("FastAPI (parameters, dependencies, its middlewares, response)", ("fastapi/",)),
    ("Starlette (routing, middleware, headers, responses)", ("starlette/",)),
    ("anyio (thread-pool hand-off of the sync endpoint)", ("anyio/",)),
    ("uvicorn (HTTP protocol, access log)", ("uvicorn/",)),
    ("logging", ("logging/",)),
    ("gRPC", ("grpc/",)),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop")),
]
OTHER = "other (stdlib, C code)"
OWN = ("services/", "libs/")


def profile_gateway(pid: int, seconds: float, out: pathlib.Path) -> bool:
    py_spy = which("py-spy")
    if not py_spy:
        return False
    cmd = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
           "--format", "raw", "--gil", "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        log(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return False
    return True


def categorise(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, needles in CATEGORIES:
            if any(nd in frame for nd in needles):
                return label
    return OTHER


def summarise_profile(raw: pathlib.Path, top: int = 20) -> dict:
    """Shares of samples: by category (exclusive), talkserve's own functions (inclusive),
    every function (inclusive and self), by thread."""
    total = 0
    inclusive: collections.Counter = collections.Counter()
    selfc: collections.Counter = collections.Counter()
    cats: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        n = int(count)
        frames = stack_text.split(";")
        total += n
        threads[frames[0]] += n
        for frame in set(frames[1:]):
            inclusive[frame] += n
        selfc[frames[-1]] += n
        cats[categorise(frames[1:])] += n
    pct = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    own = [(f, pct(n)) for f, n in inclusive.most_common() if any(f"({o}" in f for o in OWN)
           and "__main__" not in f][:top]
    return {
        "samples": total,
        "categories_pct": {label: pct(n) for label, n in cats.most_common()},
        "talkserve_functions_pct_inclusive": own,
        "threads_pct": {t: pct(n) for t, n in threads.most_common(8)},
        "top_inclusive_pct": [(f, pct(n)) for f, n in inclusive.most_common(top)],
        "top_self_pct": [(f, pct(n)) for f, n in selfc.most_common(top)],
    }


def time_store_get(st, task_id: str | None, n: int = 300) -> dict:
    """What one poll's store round trip costs on its own: `TaskStore.get` of the polled task, n times."""
    from libs.store.client import ObjectStore
    from libs.tasks import TaskStore

    if task_id is None:
        return {}
    tasks = TaskStore(ObjectStore(st.store_settings))
    tasks.get(task_id)
    weed = getattr(getattr(st, "seaweed", None), "_proc", None)
    w0 = cpu_seconds(weed.pid) if weed is not None else 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        tasks.get(task_id)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    weed_cpu = (cpu_seconds(weed.pid) - w0) if weed is not None else None
    res = {"calls": n, "wall_ms_per_get": round(1000 * wall / n, 3), "client_cpu_ms_per_get": round(1000 * cpu / n, 3),
           "store_cpu_ms_per_get": round(1000 * weed_cpu / n, 3) if weed_cpu is not None else None}
    log(f"one TaskStore.get (a store GET + record validation), sequential: {res}")
    return res


# -- one server ---------------------------------------------------------------------------------

def measure(name: str, base_url: str, pids: dict[str, int], portrait, speech, args, wrk: str, seed0: int) -> dict:
    driver = JobDriver(base_url, portrait, speech, seed0)
    driver.start()
    if not driver.started.wait(120) or driver.error:
        raise RuntimeError(f"{name}: the first job did not start: {driver.error}")
    url = f"{base_url}/api/v1/synthesis/{driver.first_id}/status"
    log(f"{name}: job running; wrk -c{args.connections} for {args.duration:g} s on {url}; {load_note()}")
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    result, text = run_wrk(wrk, url, args.connections, args.duration, args.wrk_threads)
    t1 = time.monotonic()
    cpu = {k: round(cpu_seconds(p) - cpu0[k], 2) for k, p in pids.items()}
    done_in_window = sum(1 for t in driver.finished if t0 <= t <= t1)
    result.update(cpu_seconds_in_window=cpu, window_s=round(t1 - t0, 2), jobs_finished_in_window=done_in_window,
                  wrk_output=text, loadavg_after=[round(x, 2) for x in os.getloadavg()])
    if result["requests"]:
        result["cpu_ms_per_request"] = {k: round(1000 * v / result["requests"], 3) for k, v in cpu.items()}
    p = result["percentiles_ms"]
    log(f"{name}: {result['requests_per_s']:.0f} req/s, p50 {p.get('p50', float('nan')):.1f} ms, "
        f"p99 {p.get('p99', float('nan')):.1f} ms, {done_in_window} jobs finished in the window, CPU s {cpu}")
    result["_driver"] = driver
    result["first_id"] = driver.first_id
    return result


def stop_driver(result: dict) -> None:
    driver = result.pop("_driver")
    driver.stop.set()
    driver.join(timeout=60)


def start_baseline(port: int, logs: pathlib.Path) -> subprocess.Popen:
    log_file = open(logs, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_echomimic_style", "--port", str(port)],
                            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the baseline server exited; see {logs}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if b"true" in resp.read():
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the baseline server did not start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=100)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1 leaves the 2nd core to the servers)")
    ap.add_argument("--job-seconds", type=float, default=10.0, help="speech length of each background job")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                    help="py-spy the gateway in a second window: when it misses a target (auto), always, never")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-out", default=None, help="write the profile summary (text) here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    try:
        wrk = ensure("wrk")
    except ToolMissing as exc:
        sys.stderr.write(f"bench_polling: {exc}\n")
        return 2

    from services.stack import free_port

    with tempfile.TemporaryDirectory(prefix="bench-polling-") as tmp:
        folder = pathlib.Path(tmp)
        portrait = write_portrait(folder / "portrait.png")
        speech = write_speech(folder / "speech.wav", args.job_seconds)

        # -- the gateway (full stack) --
        with stack() as st:
            pids = {"gateway": service_pid(st, "gateway"), "dicetalk": service_pid(st, "dicetalk-0"),
                    "media": service_pid(st, "media")}
            weed = getattr(getattr(st, "seaweed", None), "_proc", None)
            if weed is not None:
                pids["seaweedfs"] = weed.pid
            gw = measure("gateway", st.url, pids, portrait, speech, args, wrk, 1000)
            p99 = gw["percentiles_ms"].get("p99", float("inf"))
            missed = gw.get("ok_per_s", gw["requests_per_s"]) < TARGET_RPS or p99 >= TARGET_P99_MS
            profile = None
            if args.profile == "always" or (args.profile == "auto" and missed):
                raw = folder / "gateway.pyspy.txt"
                log(f"gateway: profiling with py-spy for {args.profile_seconds:g} s under the same load")
                holder: dict = {}
                load = threading.Thread(target=lambda: holder.update(
                    r=run_wrk(wrk, f"{st.url}/api/v1/synthesis/{gw['_driver'].first_id}/status",
                              args.connections, args.profile_seconds + 2, args.wrk_threads)))
                load.start()
                time.sleep(1.0)
                ok = profile_gateway(pids["gateway"], args.profile_seconds, raw)
                load.join()
                if ok:
                    profile = summarise_profile(raw)
                    profile["rps_while_profiled"] = holder.get("r", ({}, ""))[0].get("requests_per_s")
                else:
                    profile = {"error": "py-spy is not installed or could not attach"}
            stop_driver(gw)
            store_get = time_store_get(st, gw.get("first_id"))
            if args.profile_out and profile and "samples" in profile:
                write_profile_text(pathlib.Path(args.profile_out), profile, gw, store_get)

        # -- the baseline --
        port = free_port()
        proc = start_baseline(port, folder / "baseline.log")
        try:
            base = measure("baseline", f"http://127.0.0.1:{port}", {"baseline": proc.pid}, portrait, speech,
                           args, wrk, 2000)
            stop_driver(base)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    gp, bp = gw["percentiles_ms"], base["percentiles_ms"]
    gw_rps, base_rps = gw.get("ok_per_s", gw["requests_per_s"]), base.get("ok_per_s", base["requests_per_s"])
    gw_p99, base_p99 = gp.get("p99"), bp.get("p99")
    rows = [
        row(BENCH, f"gateway polls/s (2xx), {args.connections} clients, job generating", gw_rps, "req/s",
            "EchoMimic-style FastAPI (generation on the event loop)", base_rps,
            f"≥ {TARGET_RPS:g} polls/s", gw_rps >= TARGET_RPS, higher_is_better=True,
            target_ratio=TARGET_RPS / base_rps if base_rps else None,
            note=f"baseline: {base['requests']} answers in {args.duration:g} s"),
        row(BENCH, f"gateway p99 latency, {args.connections} clients", gw_p99 or float("nan"), "ms",
            "EchoMimic-style FastAPI", base_p99 or float("nan"), f"p99 < {TARGET_P99_MS:g} ms",
            (gw_p99 is not None and gw_p99 < TARGET_P99_MS),
            target_ratio=TARGET_P99_MS / base_p99 if base_p99 else None,
            note=f"p50 {gp.get('p50')} ms vs {bp.get('p50')} ms"),
    ]
    details = {
        "connections": args.connections, "duration_s": args.duration, "wrk_threads": args.wrk_threads,
        "job": f"{args.job_seconds:g} s speech, 512x512, 24 fps, one always generating",
        "gateway": gw, "baseline": base, "gateway_profile": profile,
        "store_get_alone": store_get,
    }
    write_result(args.json, BENCH, rows, details)
    return 0


def write_profile_text(path: pathlib.Path, profile: dict, gw: dict, store_get: dict) -> None:
    lines = [
        "# Gateway under status-polling load: where its CPU time goes (py-spy --gil: samples of the thread holding the GIL)",
        "",
        f"- wrk: {gw['requests_per_s']:.0f} req/s in the measured window; {profile.get('rps_while_profiled')} "
        f"req/s while profiled; {profile['samples']} samples at 200 Hz",
        f"- CPU ms per poll in the measured window, by process: {gw.get('cpu_ms_per_request')}",
        f"- CPU s in the {gw['window_s']} s window, by process: {gw.get('cpu_seconds_in_window')}",
        f"- one `TaskStore.get` alone (sequential, from the bench process): {store_get}",
        "",
        "## By category (each sample counted once, in the category of its innermost matching frame)",
        *[f"- {v:5.1f} %  `{k}`" for k, v in profile["categories_pct"].items()],
        "",
        "## talkserve's own functions, inclusive (time in them and everything they call)",
        *[f"- {v:5.1f} %  `{k}`" for k, v in profile["talkserve_functions_pct_inclusive"]],
        "",
        "## By thread",
        *[f"- {v:5.1f} %  `{k}`" for k, v in profile["threads_pct"].items()],
        "",
        "## Top functions, inclusive",
        *[f"- {v:5.1f} %  `{k}`" for k, v in profile["top_inclusive_pct"]],
        "",
        "## Top functions, self",
        *[f"- {v:5.1f} %  `{k}`" for k, v in profile["top_self_pct"]],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
