"""Run every talkserve benchmark and rewrite bench/results/ (results.md, results.png, results.json).

    python -m bench.run_all            # or: make bench
    python -m bench.run_all --only polling upload
    python -m bench.run_all --quick    # small sizes: checks that everything runs, figures meaningless

Only a full run rewrites bench/results/; a run with --only, --skip or --quick writes to
bench/results/partial/ (not kept in git) unless --out names a folder, so the published table
never mixes runs.

Each benchmark runs in its own process (so one's memory never shows in another's figures) and
writes its result as JSON; each figure is a ratio against a baseline measured in the same run.
Logs of every benchmark go to bench/results/logs/. The chart needs matplotlib:
`pip install -e '.[bench]'`; the polling benchmark needs `wrk` (installed with apt-get as root).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PARTIAL = RESULTS / "partial"
INSTALL_HINT = "pip install -e '.[bench]'"


@dataclass
class Bench:
    name: str  # short name for --only / --skip and the log file
    title: str  # the benchmark column of the table
    cmd: list[str]  # without --json
    quick: list[str] = field(default_factory=list)  # extra args for --quick
    timeout: int = 300
    engine_format: bool = False  # bench_engine.py: may print a JSON list instead of writing --json


BENCHES = [
    Bench("engine", "Engine", ["-m", "bench.bench_engine"], ["--lengths", "2", "4"], timeout=420, engine_format=True),
    Bench("overhead", "Platform overhead", ["-m", "bench.bench_overhead"], ["--runs", "1", "--seconds", "3"]),
    Bench("polling", "Status polling", ["-m", "bench.bench_polling"],
          ["--duration", "3", "--profile-seconds", "3", "--job-seconds", "3"], timeout=360),
    Bench("upload", "Uploads", ["-m", "bench.bench_upload"], ["--mb", "5"]),
    Bench("concat", "Joining clips", ["bench/bench_concat.py"], ["--clips", "3", "--seconds", "1", "--repeat", "1"],
          timeout=300),
    Bench("torch", "Torch render", ["-m", "bench.bench_torch"], ["--seconds", "3", "--rounds", "1"], timeout=600),
    Bench("scaleout", "Scale-out", ["-m", "bench.bench_scaleout"], ["--jobs", "4", "--size", "256", "--seconds", "4"], timeout=600),
    Bench("asr", "Speech recognition", ["-m", "bench.bench_asr"], ["--quick"], timeout=900),
    Bench("live", "Live sessions", ["-m", "bench.bench_live"], ["--seconds", "4", "--max-sessions", "2"], timeout=600),
]


# -- machine ------------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    commit, dirty = "unknown", None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        # The results this run is writing do not make the measured code dirty.
        porcelain = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                    ":(exclude)bench/results"], cwd=ROOT,
                                   capture_output=True, text=True, check=True).stdout
        dirty = bool(porcelain.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "git_commit": commit, "git_dirty": dirty,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def load_warning() -> str | None:
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    if one > 0.5 * cores or five > 0.5 * cores:
        return (f"the machine is busy (load average {one:.2f} / {five:.2f} over 1 / 5 min on {cores} cores): "
                f"other work competes with the benchmarks for CPU, so timings are noisy and pessimistic")
    return None


# -- bench_engine.py's output -------------------------------------------------------------------

def engine_rows(data) -> list[dict]:
    """Rows from bench_engine.py: its own rows (--json in our format) or its list of lengths."""
    from bench.common import row

    if isinstance(data, dict) and "rows" in data:
        return data["rows"]
    lengths = {float(r["seconds"]): r for r in data}
    rows = []
    for seconds, r in sorted(lengths.items()):
        rows.append(row("Engine", f"real-time factor, {seconds:g} s of speech, 512×512, 24 fps", r["generate_s"], "s",
                        "length of the speech", seconds, "RTF ≤ 0.5", r["rtf"] <= 0.5, target_ratio=0.5,
                        note=f"{r['frames']} frames, CPU {r.get('generate_cpu_s', '?')} s (recogniser process included)"))
    for seconds, r in sorted(lengths.items()):
        rows.append(row("Engine", f"generate vs encoding the same frames alone, {seconds:g} s", r["generate_s"], "s",
                        "encode-only (libx264)", r["encode_only_s"], "≤ 2×", r["ratio_to_encode"] <= 2.0,
                        ratio=r["ratio_to_encode"], target_ratio=2.0,
                        note=f"the speech analysis alone takes {r.get('speech_analysis_s', '?')} s; in a job "
                             "it runs in the recogniser process while the frames render"))
    if len(lengths) >= 2:
        (s_lo, lo), (s_hi, hi) = sorted(lengths.items())[0], sorted(lengths.items())[-1]
        ratio = hi["peak_rss_mb"] / lo["peak_rss_mb"]
        rows.append(row("Engine", f"peak memory, {s_hi:g} s of speech", hi["peak_rss_mb"], "MB",
                        f"peak memory, {s_lo:g} s", lo["peak_rss_mb"], "< 1.3×", ratio < 1.3, target_ratio=1.3,
                        note=f"peak RSS of the engine's process ({hi.get('peak_rss_mb_engine', '?')} MB, models "
                             f"included) and its recogniser process ({hi.get('peak_rss_mb_recogniser', '?')} MB)"))
    return rows


def supports_json(bench: Bench) -> bool:
    """Whether the script documents a --json option (bench_engine.py may not yet)."""
    try:
        out = subprocess.run([sys.executable, *bench.cmd, "--help"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120).stdout
    except subprocess.TimeoutExpired:
        return False
    return "--json" in out


def last_json_line(text: str):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in its output")


# -- running ------------------------------------------------------------------------------------

def run_bench(bench: Bench, quick: bool, results_dir: pathlib.Path, tmp: pathlib.Path) -> dict:
    script = ROOT / (bench.cmd[-1].replace(".", "/") + ".py" if bench.cmd[0] == "-m" else bench.cmd[-1])
    if not script.exists():
        msg = f"{script.relative_to(ROOT)} is not there yet: skipped"
        print(f"  {msg}", flush=True)
        return {"benchmark": bench.title, "status": "missing", "message": msg, "rows": []}
    out = tmp / f"{bench.name}.json"
    use_json = not bench.engine_format or supports_json(bench)
    cmd = [sys.executable, *bench.cmd, *(bench.quick if quick else [])]
    if use_json:
        cmd += ["--json", str(out)]
    if bench.name == "polling":
        cmd += ["--profile-out", str(results_dir / "polling_profile.md")]
    log_path = results_dir / "logs" / f"{bench.name}.log"
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=bench.timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output += f"\n[run_all] timed out after {bench.timeout} s\n"
        code = "timeout"
    took = time.monotonic() - started
    log_path.write_text(f"$ {' '.join(cmd)}\n\n{output}")
    rel = log_path.relative_to(results_dir)
    if code != 0:
        msg = f"failed ({code}) after {took:.0f} s; see {rel}"
        print(f"  {msg}\n" + "\n".join("    " + line for line in output.strip().splitlines()[-8:]), flush=True)
        return {"benchmark": bench.title, "status": "failed", "message": msg, "rows": [], "seconds": round(took, 1)}
    try:
        if use_json:
            result = json.loads(out.read_text())
        else:
            result = {"benchmark": bench.title, "details": {"lengths": last_json_line(done.stdout)}}
            print("  (bench_engine.py has no --json yet: read its printed JSON line)", flush=True)
        if bench.engine_format:
            result["rows"] = engine_rows(result if "rows" in result else result["details"]["lengths"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"ran, but its result could not be read ({exc}); see {rel}"
        print(f"  {msg}", flush=True)
        return {"benchmark": bench.title, "status": "failed", "message": msg, "rows": [], "seconds": round(took, 1)}
    result.update(status="ok", seconds=round(took, 1), log=str(rel))
    for r in result["rows"]:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[r["pass"]]
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3g}×"
        print(f"  {r['figure']}: {r['value']} {r['unit']} vs {r['baseline_value']} {r['unit']} → {ratio} "
              f"(target {r['target']}) {verdict}", flush=True)
    print(f"  done in {took:.0f} s", flush=True)
    return result


# -- writing ------------------------------------------------------------------------------------

def fmt_num(x) -> str:
    if x is None:
        return "—"
    x = float(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def write_markdown(path: pathlib.Path, machine: dict, warning: str | None, results: list[dict], total_s: float,
                   chart: bool) -> None:
    m = machine
    lines = [
        "# talkserve benchmark results",
        "",
        f"Written by `python -m bench.run_all` (`make bench`) on {m['date']}, in {total_s / 60:.1f} min. "
        "Every ratio is against a baseline measured in the same run, on the same machine.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}, Python {m['python']}",
        f"- Code: git commit `{m['git_commit']}`" + (" with uncommitted changes in tracked files" if m["git_dirty"]
                                                      else ""),
        f"- Load average at start: {m['loadavg_start']}, at end: {m['loadavg_end']} (1 / 5 / 15 min)",
    ]
    if warning:
        lines += ["", f"> **Warning:** {warning}."]
    lines += ["", "| benchmark | figure | baseline | ratio | target | result |", "| --- | --- | --- | --- | --- | --- |"]
    notes = []
    for res in results:
        if not res["rows"]:
            lines.append(f"| {res['benchmark']} | — | — | — | — | not measured: {res.get('message', '')} |")
            continue
        for r in res["rows"]:
            verdict = {True: "✅ pass", False: "❌ miss", None: "—"}[r["pass"]]
            ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3g}×"
            lines.append(f"| {r['benchmark']} | {r['figure']}: **{fmt_num(r['value'])} {r['unit']}** | "
                         f"{r['baseline']}: {fmt_num(r['baseline_value'])} {r['unit']} | {ratio} | {r['target']} | "
                         f"{verdict} |")
            if r.get("note"):
                notes.append(f"- {r['benchmark']}, {r['figure']}: {r['note']}")
    if chart:
        lines += ["", "![ratios against targets](results.png)"]
    if notes:
        lines += ["", "## Notes", "", *notes]
    lines += ["", "## Details", ""]
    for res in results:
        lines += details_md(res)
    lines += ["The full numbers are in [results.json](results.json); each benchmark's output is in "
              "[logs/](logs/).", ""]
    path.write_text("\n".join(lines))


def details_md(res: dict) -> list[str]:
    d = res.get("details") or {}
    name = res["benchmark"]
    out = [f"### {name}", ""]
    if res.get("status") != "ok":
        return out + [res.get("message", ""), ""]
    try:
        if name == "Platform overhead":
            out.append(f"Overhead {d['overhead_s'] * 1000:+.0f} ms ({d['overhead_pct']:+.1f} %) on a "
                       f"{d['speech_seconds']:g} s job; allowed {d['allowed_overhead_s'] * 1000:.0f} ms. "
                       f"Stack, median parts (s): {d['stack_median_parts_s']}; in process: "
                       f"{d['in_process_median_parts_s']}.")
            if d.get("server_steps_median_s"):
                out += ["", f"Server-side steps from the services' logs (median, s): {d['server_steps_median_s']}."]
            if d.get("pocketsphinx_decoder_create_on_new_thread_s"):
                out += ["", "Making the engine's thread-local PocketSphinx decoder on a new thread takes "
                        f"{d['pocketsphinx_decoder_create_on_new_thread_s']} s; the model service runs every job on "
                        "a new thread, so every job in the stack pays it (the warm in-process engine does not)."]
            phases = d.get("stack_phases_first_seen_after_submit") or []
            if phases:
                out += ["", "When each state was first seen after the upload returned (median, s):", ""]
                out += [f"- {p['first_seen_s']:.2f} s: {p['phase']}" for p in phases]
        elif name == "Status polling":
            for who in ("gateway", "baseline"):
                s = d[who]
                p = s["percentiles_ms"]
                out.append(f"- {who}: {s['requests_per_s']:.0f} req/s, p50 {p.get('p50')} ms, p90 {p.get('p90')} ms, "
                           f"p99 {p.get('p99')} ms, max {s.get('latency_max_ms')} ms, socket errors "
                           f"{s.get('socket_errors')}, non-2xx {s.get('non_2xx')}; jobs finished in the window: "
                           f"{s.get('jobs_finished_in_window')}; CPU s by process: {s.get('cpu_seconds_in_window')}")
            if d.get("store_get_alone"):
                out.append(f"- one task-record GET from the store alone: {d['store_get_alone']}")
            prof = d.get("gateway_profile")
            if prof and "categories_pct" in prof:
                out += ["", "Gateway profile under the same load ([polling_profile.md](polling_profile.md), "
                        "py-spy, share of GIL-holding samples):", ""]
                out += [f"- {v:.0f} %: {k}" for k, v in prof["categories_pct"].items() if v >= 1.0]
        elif name == "Uploads":
            for who in ("gateway", "baseline"):
                s = d[who]
                out.append(f"- {who}: RSS {s['rss_before_mb']} MB before, peak {s['peak_mb']} MB "
                           f"(+{s['growth_mb']} MB), upload answered in {s['upload_s']} s")
        elif name == "Scale-out":
            for key in ("one_replica", "two_replicas"):
                s = d[key]
                out.append(f"- {s['replicas']} replica(s): {s['jobs']} jobs in {s['span_s']} s ({s['timed_by']}) = "
                           f"{s['jobs_per_s']} jobs/s; cores busy per replica {s['replica_cores_busy']}, whole "
                           f"stack {s['machine_cores_busy']}; CPU s by process {s['cpu_seconds']}")
            if d.get("why_this_size"):
                out.append(f"- job size: {d['job']}; {d['why_this_size']}")
        elif name == "Joining clips":
            out.append(f"{d['clips']} clips of {d['seconds_each']:g} s, {d['size']}px @ {d['fps']} fps; "
                       f"runs (s): {d['runs_s']}")
        elif name == "Torch render":
            cpu = d["cpu"]
            out.append(f"On the CPU ({cpu['cpu']}; torch {cpu['torch']}, {cpu['torch_threads']} thread): "
                       f"{cpu['seconds']:g} s of speech at {cpu['size']} px, {cpu['frames']} frames; generate "
                       f"runs (s): {cpu['generate_runs_s']}; CPU s per job: {cpu['generate_cpu_s']}; the render "
                       f"alone, CPU ms a frame: {cpu['render_only_cpu_ms_per_frame']}; {cpu['load']}.")
            gpu = d["gpu"]
            out += ["", f"GPU: {gpu}" if isinstance(gpu, str) else f"GPU {gpu['device']}: {gpu['sizes']}"]
        elif name == "Engine":
            for r in d.get("lengths") or []:
                out.append(f"- {r}")
        elif name == "Speech recognition":
            out += [f"Every recogniser compared (chosen: {d['chosen']}); WER after normalising numbers, "
                    "hyphens and spelling (libs/speech/wer.py):", "", d["table_md"]]
    except (KeyError, TypeError) as exc:
        out.append(f"(details incomplete: {exc})")
    return out + [""]


def write_chart(path: pathlib.Path, results: list[dict]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no chart. Install the benchmark extras: {INSTALL_HINT}", flush=True)
        return False
    rows = [r for res in results for r in res["rows"] if r.get("ratio")]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(11, 0.62 * len(rows) + 1.6))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        colour = {True: "#2e9e44", False: "#d0433a", None: "#9a9a9a"}[r["pass"]]
        ax.barh(y, r["ratio"] - 1.0, color=colour, height=0.6, left=1.0)  # from 1×: no change
        label = f"{r['ratio']:.3g}×"
        if r.get("target_ratio"):
            ax.plot([r["target_ratio"]] * 2, [y - 0.42, y + 0.42], color="black", linewidth=2.2)
            label += f"  (target {'≥' if r['higher_is_better'] else '≤'} {r['target_ratio']:.3g}×)"
        ax.text(max(r["ratio"], 1.0, r.get("target_ratio") or 0) * 1.08, y, label, va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{r['benchmark']}: {_short(r['figure'])}" for r in rows], fontsize=8)
    ax.set_xscale("log")
    hi = max(max(r["ratio"], r.get("target_ratio") or 0) for r in rows)
    lo = min(min(r["ratio"], r.get("target_ratio") or r["ratio"]) for r in rows)
    ax.set_xlim(lo / 2, hi * 8)
    ax.axvline(1.0, color="#555555", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio against the baseline measured in the same run (log scale, bars start at 1×)\n"
                  "black tick: the target; green: target met, red: missed")
    ax.set_title("talkserve benchmarks: ratios against same-run baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _short(text: str, width: int = 58) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [b.name for b in BENCHES]
    ap.add_argument("--only", nargs="+", choices=names, help="run only these benchmarks")
    ap.add_argument("--skip", nargs="+", choices=names, default=[], help="leave these out")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that everything runs")
    ap.add_argument("--out", default=None,
                    help="results folder (default bench/results, or bench/results/partial for a partial or quick run)")
    args = ap.parse_args(argv)

    out = pathlib.Path(args.out or (PARTIAL if args.only or args.skip or args.quick else RESULTS)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    (out / "polling_profile.md").unlink(missing_ok=True)

    machine = machine_info()
    machine["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    warning = load_warning()
    if warning:
        print(f"WARNING: {warning}.", flush=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"NOTE: matplotlib is missing, so no chart will be drawn: {INSTALL_HINT}", flush=True)
    if shutil.which("py-spy") is None and not (pathlib.Path(sys.executable).parent / "py-spy").exists():
        print(f"NOTE: py-spy is missing, so a missed polling target cannot be profiled: {INSTALL_HINT}", flush=True)
    try:
        from bench.ensure_tools import ToolMissing, ensure

        ensure("wrk")
    except ToolMissing as exc:
        print(f"NOTE: {exc}; the polling benchmark will fail", flush=True)

    selected = [b for b in BENCHES if (not args.only or b.name in args.only) and b.name not in args.skip]
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp:
        for i, bench in enumerate(selected, 1):
            print(f"[{i}/{len(selected)}] {bench.title} ({bench.name})", flush=True)
            results.append(run_bench(bench, args.quick, out, pathlib.Path(tmp)))
    total = time.monotonic() - started
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    chart = write_chart(out / "results.png", results)
    if not chart:
        (out / "results.png").unlink(missing_ok=True)
    write_markdown(out / "results.md", machine, warning, results, total, chart)
    (out / "results.json").write_text(json.dumps(
        {"machine": machine, "warning": warning, "quick": args.quick, "total_seconds": round(total, 1),
         "benchmarks": results}, indent=2, ensure_ascii=False) + "\n")
    rows = [r for res in results for r in res["rows"]]
    missed = [r for r in rows if r["pass"] is False]
    broken = [res["benchmark"] for res in results if res.get("status") != "ok"]
    print(f"\n{len(rows)} figures, {len(rows) - len(missed)} on target, {len(missed)} missed"
          + (f"; not measured: {', '.join(broken)}" if broken else "")
          + f". Wrote {out / 'results.md'} in {total / 60:.1f} min.", flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
