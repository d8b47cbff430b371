"""Baseline server for the benchmarks: a FastAPI wrapper built the way the source wrappers are.

Like the EchoMimic (and DICE-Talk) FastAPI wrappers that talkserve replaces, it
  - keeps its tasks in a Python dict (lost on restart),
  - reads every upload whole into memory (`await file.read()`),
  - runs the generation in an `async def` background task on the event loop, calling the
    blocking engine directly, so no request is answered while a video is being generated,
  - adds the audio in process.
It runs the same engine (`Engine.generate`) and answers the same DICE-Talk paths, so the
benchmarks can drive it exactly as they drive the gateway.

    python -m bench.baseline_echomimic_style --port 9000 [--no-engine]

Endpoints: GET /health, POST /api/v1/synthesis/start, GET /api/v1/synthesis/{id}/status,
POST /upload (reads one file whole and answers its size: the upload baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fastapi import BackgroundTasks, FastAPI, File, Form, HTTPException, UploadFile

WORK = pathlib.Path(tempfile.mkdtemp(prefix="baseline-echomimic-"))
tasks: dict[str, dict] = {}
engine = None


def create_app(load_engine: bool = True) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        global engine
        if load_engine:
            from libs.talkface.engine import Engine

            engine = Engine()
        yield

    app = FastAPI(title="baseline (EchoMimic-wrapper style)", lifespan=lifespan)

    @app.get("/health")
    async def health():
        return {"status": "healthy", "model_loaded": engine is not None}

    async def process(task_id: str, image: str, audio: str, params: dict) -> None:
        # The wrappers' shape: an async task that calls blocking model code on the event loop.
        from libs.talkface.api import PortraitJob
        from services.media import ops

        task = tasks[task_id]
        task.update(status="PROCESSING", message="Generating video...", updated_at=time.time())
        try:
            silent = str(WORK / f"{task_id}-silent.mp4")
            out = str(WORK / f"{task_id}.mp4")

            def progress(p):
                task["progress"] = 0.1 + 0.8 * p.done / max(1, p.total)

            engine.generate(PortraitJob(image_path=image, audio_path=audio, out_path=silent,
                                        min_resolution=params["min_resolution"], fps=params["fps"],
                                        emotion=params["emotion"], emo_scale=6.0, seed=params["seed"]),
                            progress=progress)
            ops.mux(silent, audio, out)
            task.update(status="COMPLETED", progress=1.0, message="Video generated successfully",
                        result=out, updated_at=time.time())
        except Exception as exc:  # noqa: BLE001 - the wrappers record any failure as the message
            task.update(status="FAILED", message=str(exc), updated_at=time.time())

    @app.post("/api/v1/synthesis/start")
    async def start(background_tasks: BackgroundTasks, image: UploadFile = File(...),
                    audio: UploadFile = File(...), emotion: str = Form("neutral"),
                    min_resolution: int = Form(256), fps: int = Form(24), seed: int = Form(0)):
        if engine is None:
            raise HTTPException(503, "model not loaded")
        task_id = str(uuid.uuid4())
        image_path = WORK / f"{task_id}-image"
        audio_path = WORK / f"{task_id}-audio"
        image_path.write_bytes(await image.read())
        audio_path.write_bytes(await audio.read())
        now = time.time()
        tasks[task_id] = {"task_id": task_id, "status": "PENDING", "progress": 0.0,
                          "message": "Task created successfully", "created_at": now, "updated_at": now}
        background_tasks.add_task(process, task_id, str(image_path), str(audio_path),
                                  {"emotion": emotion, "min_resolution": min_resolution, "fps": fps, "seed": seed})
        return {"task_id": task_id, "status": "PENDING", "message": "Task created successfully"}

    @app.get("/api/v1/synthesis/{task_id}/status")
    async def status(task_id: str):
        task = tasks.get(task_id)
        if task is None:
            raise HTTPException(404, "Task not found")
        return {k: task[k] for k in ("task_id", "status", "progress", "message", "created_at", "updated_at")}

    @app.post("/upload")
    async def upload(file: UploadFile = File(...)):
        content = await file.read()  # the whole file in memory, as the wrappers do
        (WORK / "upload.bin").write_bytes(content)
        return {"size": len(content)}

    return app


def main(argv=None) -> int:
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--no-engine", action="store_true", help="do not load the engine (upload baseline)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    uvicorn.run(create_app(not args.no_engine), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
