"""Start the whole local stack: object store, media service, the model services, gateway.

Each service runs as its own process, exactly as in a deployment; the stack waits until every
one reports healthy, and stops them in reverse order, gracefully, on request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.store.seaweed import SeaweedServer
from libs.store.settings import StoreSettings

log = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL_SERVICES = ("echomimic", "dicetalk", "latentsync", "voice")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def store_env(settings: StoreSettings) -> dict[str, str]:
    """The environment that points a talkserve process at a store."""
    return {
        "TALKSERVE_S3_ENDPOINT": settings.endpoint,
        "TALKSERVE_S3_ACCESS_KEY": settings.access_key,
        "TALKSERVE_S3_SECRET_KEY": settings.secret_key.get_secret_value(),
        "TALKSERVE_S3_SECURE": str(settings.secure).lower(),
        "TALKSERVE_S3_BUCKET": settings.bucket,
        "TALKSERVE_S3_REGION": settings.region,
    }


def wait_grpc_serving(target: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until `target` reports SERVING on grpc.health.v1."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the service for {target} exited with code {proc.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)  # type: ignore[attr-defined]
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{target} was not SERVING within {timeout:.0f} s")


def wait_http_ready(base_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until the gateway at `base_url` is ready (it answers at once, but waits for its store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {proc.returncode}")
        with contextlib.suppress(OSError, ValueError):  # 503 (HTTPError) while it waits for the store
            with urllib.request.urlopen(base_url + "/readyz", timeout=5) as resp:
                if json.load(resp).get("status") == "ready":
                    return
        time.sleep(0.2)
    raise TimeoutError(f"{base_url} did not answer within {timeout:.0f} s")


class StackStartError(RuntimeError):
    """A service of the stack did not come up; the message says which and quotes its log."""


def log_tail(path: pathlib.Path, lines: int = 6) -> str:
    """The last lines of a service's log that say what went wrong (a traceback's last lines)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    target: str
    module: str
    env: dict[str, str]


@dataclass
class Stack:
    """The local stack; use as a context manager or call start()/stop()."""

    data_dir: pathlib.Path
    host: str = "127.0.0.1"
    gateway_ports: list[int] = field(default_factory=lambda: [8000, 7688])
    replicas: dict[str, int] = field(default_factory=dict)
    gateways: int = 1
    store_settings: StoreSettings | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 180.0
    services: list[Service] = field(default_factory=list)
    seaweed: SeaweedServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.gateway_ports[0]}"

    def _popen(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env, **self.extra_env},
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _spawn(self, name: str, module: str, env: dict[str, str], target: str) -> Service:
        svc = Service(name, self._popen(name, module, env), target, module, env)
        self.services.append(svc)
        return svc

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would."""
        svc = self.service(name)
        svc.proc.kill()
        svc.proc.wait()

    def restart(self, name: str, timeout: float | None = None) -> None:
        """Start a stopped or killed service again on the same address and wait until it is healthy."""
        svc = self.service(name)
        if svc.proc.poll() is None:
            svc.proc.terminate()
            svc.proc.wait(timeout=60)
        svc.proc = self._popen(name, svc.module, svc.env)
        timeout = timeout or self.start_timeout
        if svc.module == "services.gateway":
            wait_http_ready(svc.target, timeout, svc.proc)
        else:
            wait_grpc_serving(svc.target, timeout, svc.proc)

    @property
    def gateway_urls(self) -> list[str]:
        return [s.target for s in self.services if s.module == "services.gateway"]

    def start(self) -> "Stack":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except (RuntimeError, TimeoutError) as exc:
            failed = next((svc for svc in self.services if svc.proc.poll() is not None), None)
            self.stop()
            if failed is None:
                raise StackStartError(str(exc)) from exc
            log_file = self.data_dir / "logs" / f"{failed.name}.log"
            raise StackStartError(f"the {failed.name} service stopped while starting ({exc}); its log "
                                  f"{log_file} ends with:\n{log_tail(log_file)}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if self.store_settings is None:
            self.seaweed = SeaweedServer(self.data_dir / "store", host=self.host)
            self.seaweed.start()
            self.store_settings = self.seaweed.settings
        base = store_env(self.store_settings)
        media_port = free_port(self.host)
        waiting = [self._spawn("media", "services.media", {
            **base, "TALKSERVE_MEDIA_HOST": self.host, "TALKSERVE_MEDIA_PORT": str(media_port)},
            f"{self.host}:{media_port}")]
        targets: dict[str, list[str]] = {}
        for kind in MODEL_SERVICES:
            targets[kind] = []
            for i in range(self.replicas.get(kind, 1)):
                port = free_port(self.host)
                prefix = f"TALKSERVE_{kind.upper()}_"
                svc = self._spawn(f"{kind}-{i}", f"services.{kind}", {
                    **base, prefix + "HOST": self.host, prefix + "PORT": str(port),
                    prefix + "REPLICA_ID": f"{kind}-{i}"}, f"{self.host}:{port}")
                targets[kind].append(svc.target)
                waiting.append(svc)
        for svc in waiting:
            wait_grpc_serving(svc.target, self.start_timeout, svc.proc)
            log.info("%s is serving on %s", svc.name, svc.target)
        gateways = []
        for i in range(self.gateways):
            ports = self.gateway_ports if i == 0 else [free_port(self.host)]
            gateways.append(self._spawn(f"gateway-{i}" if i else "gateway", "services.gateway", {
                **base,
                "TALKSERVE_GATEWAY_HOST": self.host,
                "TALKSERVE_GATEWAY_PORTS": json.dumps(ports),
                "TALKSERVE_GATEWAY_GATEWAY_ID": f"gateway-{i}",
                "TALKSERVE_GATEWAY_MEDIA_TARGET": waiting[0].target,
                **{f"TALKSERVE_GATEWAY_{k.upper()}_TARGETS": json.dumps(v) for k, v in targets.items()},
            }, f"http://{self.host}:{ports[0]}"))
        for gateway in gateways:
            wait_http_ready(gateway.target, self.start_timeout, gateway.proc)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every service, gateway first, and wait for each to drain."""
        for svc in reversed(self.services):
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in reversed(self.services):
            try:
                svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()
        self.services.clear()
        if self.seaweed is not None:
            self.seaweed.stop()
            self.seaweed = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
