"""Benchmark: throughput of a batch of jobs with 1 and with 2 dicetalk replicas (1 slot each).

20 DICE-Talk jobs are submitted at once to the full local stack; the figure is jobs per
second from the first task's creation to the last task's completion (timestamps of the task
records in the store; the client's own wall clock is reported too). Each configuration
first runs one job per replica, so every replica is warm.

Job size: 12 s of speech at 1536x1536, 24 fps, and every replica pinned to a core of its own
(as a Kubernetes CPU limit of 1 would do). On this 2-core machine two replicas must not fight
for the same core, or the ratio says nothing about scale-out: each replica runs with
TALKSERVE_DICETALK_ENGINE_THREADS=1 and one slot, and is pinned (all its threads) to core 0 or
1; the gateway, media service and store float. The jobs are large because the rest of the
stack costs CPU per job too (store round trips, normalising and encoding the sound, muxing,
the gateway's bookkeeping: about 0.45 CPU-s a job), which with two pinned replicas has to come
out of their cores: the more of a job's CPU the render is, the smaller that share. At 1536 px
a job renders for about 6 CPU-s, so the stack is 7 % of it (at 1024 px and 16 s, 10 %:
1.72-1.74x on the machine of bench/results; 4 s jobs: about 1.35x). On GPUs, where a model
job takes minutes, the share is smaller still. The benchmark measures both (CPU seconds of
every process) and prints the ratio this machine allows next to the one it got.

    python -m bench.bench_scaleout [--jobs 20] [--seconds 12] [--size 1536] [--no-pin] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import (cpu_seconds, family, load_note, log, row, service_pid, stack, status, submit, write_portrait,
                          write_result, write_speech)

BENCH = "Scale-out"
TARGET = 1.8


def server_span(st, task_ids: list[str]) -> float | None:
    """Seconds from the first task's creation to the last one's last update, from the store."""
    try:
        from libs.store.client import ObjectStore
        from libs.tasks import TaskStore

        tasks = TaskStore(ObjectStore(st.store_settings))
        recs = [tasks.get(t)[0] for t in task_ids]
        return (max(r.updated_at for r in recs) - min(r.created_at for r in recs)).total_seconds()
    except Exception as exc:  # noqa: BLE001 - the client's clock is the fallback
        log(f"could not read task timestamps from the store ({exc}); using the client's clock")
        return None


def pin_process(pid: int, cpu: int) -> None:
    """Keep every thread of `pid` and of its children (and so all they start later) on one core."""
    for p in family(pid):
        for tid in os.listdir(f"/proc/{p}/task"):
            try:
                os.sched_setaffinity(int(tid), {cpu})
            except ProcessLookupError:
                pass  # a thread that just ended


def run_batch(replicas: int, jobs: int, portrait, speech, size: int, seed0: int, pin: bool = True) -> dict:
    import httpx

    env = {"TALKSERVE_DICETALK_SLOTS": "1", "TALKSERVE_DICETALK_ENGINE_THREADS": "1"}
    with stack(replicas={"dicetalk": replicas}, extra_env=env) as st, \
            httpx.Client(base_url=st.url, timeout=120) as client:
        warm = [submit(client, portrait, speech, seed0 + 900 + i, min_resolution=size) for i in range(replicas)]
        wait_all(client, warm)
        names = [f"dicetalk-{i}" for i in range(replicas)]
        pids = {n: service_pid(st, n) for n in names}
        if pin:
            for i, n in enumerate(names):
                pin_process(pids[n], i % (os.cpu_count() or 1))
        pids.update(gateway=service_pid(st, "gateway"), media=service_pid(st, "media"))
        weed = getattr(getattr(st, "seaweed", None), "_proc", None)
        if weed is not None:
            pids["seaweedfs"] = weed.pid
        log(f"{replicas} replica(s): submitting {jobs} jobs; {load_note()}")
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.perf_counter()
        ids = [submit(client, portrait, speech, seed0 + i, min_resolution=size) for i in range(jobs)]
        t_submitted = time.perf_counter() - t0
        wait_all(client, ids)
        wall = time.perf_counter() - t0
        cpu = {k: round(cpu_seconds(p) - cpu0[k], 2) for k, p in pids.items()}
        span = server_span(st, ids)
    elapsed = span if span else wall
    replica_cores = {n: round(cpu[n] / elapsed, 2) for n in names}
    res = {"replicas": replicas, "jobs": jobs, "span_s": round(elapsed, 3), "client_wall_s": round(wall, 3),
           "submit_s": round(t_submitted, 3), "jobs_per_s": round(jobs / elapsed, 4), "cpu_seconds": cpu,
           "replica_cores_busy": replica_cores, "machine_cores_busy": round(sum(cpu.values()) / elapsed, 2),
           "timed_by": "store timestamps" if span else "client clock"}
    log(f"{replicas} replica(s): {jobs} jobs in {elapsed:.2f} s = {res['jobs_per_s']:.3f} jobs/s; "
        f"cores busy per replica {replica_cores}; CPU s {cpu}")
    return res


def wait_all(client, ids: list[str], poll: float = 0.5, timeout: float = 900) -> None:
    pending = list(ids)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs not done")
        still = []
        for i, task_id in enumerate(pending):
            st = status(client, task_id)
            if st["status"] == "FAILED":
                raise RuntimeError(f"job {task_id} failed: {st['message']}")
            if st["status"] != "COMPLETED":
                still = pending[i:]  # FIFO: later tasks finish later; look again next round
                break
        pending = still
        if pending:
            time.sleep(poll)
    # every task is COMPLETED now (the loop only moved past completed ones)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=12.0, help="speech length of each job")
    ap.add_argument("--size", type=int, default=1536, help="min_resolution of each job")
    ap.add_argument("--no-pin", action="store_true", help="let replicas float over all cores")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        folder = pathlib.Path(tmp)
        portrait = write_portrait(folder / "portrait.png")
        speech = write_speech(folder / "speech.wav", args.seconds)
        one = run_batch(1, args.jobs, portrait, speech, args.size, 10_000, pin=not args.no_pin)
        two = run_batch(2, args.jobs, portrait, speech, args.size, 20_000, pin=not args.no_pin)

    ratio = two["jobs_per_s"] / one["jobs_per_s"]
    render = sum(one["cpu_seconds"][n] for n in one["replica_cores_busy"]) / one["jobs"]
    rest = sum(v for n, v in one["cpu_seconds"].items() if n not in one["replica_cores_busy"]) / one["jobs"]
    busy = max(one["replica_cores_busy"].values())
    cores = os.cpu_count() or 1
    # With one replica the whole stack (replica, media, store, gateway) already keeps this many
    # cores busy; two replicas cannot go faster than the machine's cores allow.
    ceiling = cores / one["machine_cores_busy"] if one["machine_cores_busy"] else float("inf")
    rows = [row(BENCH, f"{args.jobs} jobs ({args.seconds:g} s speech, {args.size}px), 2 replicas",
                two["jobs_per_s"], "jobs/s", "1 replica (1 slot)", one["jobs_per_s"], f"≥ {TARGET:g}×",
                ratio >= TARGET, target_ratio=TARGET, higher_is_better=True,
                note=f"one replica keeps {busy:.2f} cores busy and the whole stack {one['machine_cores_busy']:.2f}; "
                     f"the machine has {cores}, so {ceiling:.2f}× is the most 2 replicas can reach here")]
    details = {"job": {"speech_seconds": args.seconds, "min_resolution": args.size, "fps": 24},
               "one_replica": one, "two_replicas": two, "ratio": round(ratio, 3),
               "ceiling_on_this_machine": round(ceiling, 3),
               "pinned": not args.no_pin,
               "why_this_size": f"at {args.size}px a job renders for {render:.2f} CPU-s on its replica and costs the "
                                f"rest of the stack {rest:.2f} CPU-s ({100 * rest / render:.0f} %), which two replicas "
                                "pinned to the two cores have to share their cores with"}
    write_result(args.json, BENCH, rows, details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
