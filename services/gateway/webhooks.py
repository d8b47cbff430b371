"""Webhooks: POST a job's events to the URL given at its creation, signed, retried, never blocking.

A job's `webhook_events` choose the events (webhook_events.py): `start` (it began running),
`progress` (at most one per `webhook_progress_interval_seconds`), and the final ones,
`completed`, `failed`, `cancelled` (the default: the final ones). Each message's body is
`{"type": "job.<event>", "timestamp", "data": <the job, with its metadata>}`. The messages of
one job leave in the order they happened. The final message is retried with backoff and its
delivery recorded on the job (`webhook`); `start` is retried too, `progress` is sent once
(a later one supersedes it).

Signing is the Standard Webhooks scheme, done by its reference library (`standardwebhooks`):
headers `webhook-id` (stable across the retries of one message), `webhook-timestamp` (Unix
seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
Every API key has its own secret `whsec_<base64>`, derived from the gateway's master
secret, so one customer cannot forge another's webhooks; `GET /v1/webhooks/secret` tells a
key its secret.

A URL passes the media service's address rules (no loopback, private, link-local or
metadata addresses unless allowed by `webhook_allow_networks`) when the job is created and
again on every connection, through the same connect-time guarded backend the media service
fetches with, so DNS rebinding cannot turn a webhook against the internal network.

Exactly one gateway delivers the final message: it claims `tasks/<id>/webhook.json` with a
create-only write and records the attempts there (`start` and `progress` come from the
gateway that runs the job). Deliveries run on a small thread pool, so a slow receiver never
holds up the dispatcher.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Callable

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from libs.logs import REQUEST_ID
from libs.safehttp import (
    DEFAULT_PORTS,
    AddressPolicy,
    FetchError,
    GuardedBackend,
    check_url,
    resolve,
)
from libs.store.client import AlreadyExists, NotFound, ObjectStore
from libs.tasks import TaskNotFound, TaskRecord, TaskStatus, TaskStore, utcnow
from services.gateway.keys import task_key
from services.gateway.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_DELIVERIES
from services.gateway.settings import GatewaySettings
from services.gateway.webhook_events import PROGRESS, START, wanted

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MASTER_SECRET_KEY = "config/webhook-master-secret.json"
USER_AGENT = "talkserve-webhooks/1"
# A body this large is cut from the log line of a failed attempt.
_LOGGED_BODY = 200
# The setting that lets webhooks reach addresses that are not public, named in every refusal.
ALLOW_SETTING = "TALKSERVE_GATEWAY_WEBHOOK_ALLOW_NETWORKS"


class WebhookRefused(ValueError):
    """A webhook URL that may not be used; `code` is one of libs.safehttp's URL_* codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class _Transient(Exception):
    """An attempt failed in a way a later attempt may not (5xx, timeout, connection refused)."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (a secret without the prefix is used as text)."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX):])
    return secret.encode()


def check_webhook_url(url: str, policy: AddressPolicy, timeout: float = 5.0) -> str:
    """Refuse a URL that is not http(s) or reaches a non-public address; returns it unchanged."""
    try:
        parsed = check_url(url)
        addresses = resolve(parsed.host, parsed.port or DEFAULT_PORTS[parsed.scheme], timeout)
    except FetchError as exc:
        raise WebhookRefused(exc.code, str(exc)) from exc
    for address in addresses:
        reason = policy.refusal(address)
        if reason:
            raise WebhookRefused("url_forbidden_address",
                                 f"{parsed.host} resolves to {address} ({reason}); webhooks are not sent there "
                                 f"unless the gateway's setting {ALLOW_SETTING} lists its network")
    return url


class Webhooks:
    """Signs and delivers the events of jobs created with a `webhook_url`."""

    def __init__(self, settings: GatewaySettings, tasks: TaskStore, store: ObjectStore,
                 render: Callable[[TaskRecord], dict]):
        self.settings = settings
        self.tasks = tasks
        self.store = store
        self.render = render
        self.policy = AddressPolicy(settings.webhook_allow_networks)
        self._master = self._master_secret()
        self._pool = ThreadPoolExecutor(max_workers=settings.webhook_workers, thread_name_prefix="webhook")
        self._stop = threading.Event()
        # Each job's messages wait here in order; one pool thread at a time sends a job's messages.
        self._lock = threading.Lock()
        self._waiting: dict[str, collections.deque[Callable[[], object]]] = {}
        # What was sent of each running job here: start, the last progress time and value.
        self._started: set[str] = set()
        self._progress: dict[str, tuple[float, float]] = {}

    # -- secrets -------------------------------------------------------------------------------

    def _master_secret(self) -> bytes:
        """The configured secret, or the one kept in the store (made by the first gateway)."""
        if self.settings.webhook_secret is not None:
            return decode_secret(self.settings.webhook_secret.get_secret_value())
        fresh = {"secret": SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()}
        try:
            self.store.create_json(MASTER_SECRET_KEY, fresh, {})
        except AlreadyExists:
            pass
        body, _, _ = self.store.read_json(MASTER_SECRET_KEY)
        return decode_secret(body["secret"])

    def secret_for(self, key_id: str | None) -> str:
        """The `whsec_` secret the webhooks of one API key (or of anonymous jobs) are signed with."""
        derived = hmac.new(self._master, f"webhooks:{key_id or 'anonymous'}".encode(), hashlib.sha256).digest()
        return SECRET_PREFIX + base64.b64encode(derived).decode()

    def check(self, url: str) -> str:
        """Validate a webhook URL given at job creation (blocking: resolves the host)."""
        return check_webhook_url(url, self.policy, self.settings.webhook_timeout_seconds)

    # -- what to send --------------------------------------------------------------------------

    def notify(self, task_id: str) -> None:
        """A unit of the task ended, or it was cancelled: deliver its final state if it has one."""
        self._enqueue(task_id, lambda: self.deliver(task_id))

    def updated(self, rec: TaskRecord) -> None:
        """A running task's record was written here: send `start` and `progress` if it asked for them."""
        if not rec.webhook_url or rec.finished or rec.status != TaskStatus.PROCESSING:
            return
        now = time.monotonic()
        with self._lock:
            first = rec.id not in self._started and wanted(rec, START)
            if first:
                self._started.add(rec.id)
            last_at, last_value = self._progress.get(rec.id, (float("-inf"), -1.0))
            progress = (wanted(rec, PROGRESS) and rec.progress > last_value
                        and now - last_at >= self.settings.webhook_progress_interval_seconds)
            if progress:
                self._progress[rec.id] = (now, rec.progress)
        if first:
            self._enqueue(rec.id, lambda: self._send_event(rec, START, f"msg_{rec.id}_start", retry=True))
        if progress:
            msg_id = f"msg_{rec.id}_progress_{int(rec.progress * 10000)}"
            self._enqueue(rec.id, lambda: self._send_event(rec, PROGRESS, msg_id, retry=False))

    def close(self) -> None:
        """Stop: waiting retries end now; a delivery in flight finishes its current attempt."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def state(self, task_id: str) -> dict | None:
        """What happened to the task's final webhook so far (None before its final state)."""
        try:
            body, _, _ = self.store.read_json(task_key(task_id, "webhook.json"))
        except NotFound:
            return None
        return body

    def _enqueue(self, task_id: str, send: Callable[[], object]) -> None:
        if self._stop.is_set():
            return
        rid = REQUEST_ID.get()
        with self._lock:
            queue = self._waiting.get(task_id)
            if queue is not None:  # a pool thread is sending this job's messages: it takes this one next
                queue.append(send)
                return
            self._waiting[task_id] = collections.deque([send])
        self._pool.submit(self._drain, task_id, rid)

    def _drain(self, task_id: str, rid: str) -> None:
        REQUEST_ID.set(rid)
        while True:
            with self._lock:
                queue = self._waiting[task_id]
                if not queue:
                    del self._waiting[task_id]
                    return
                send = queue.popleft()
            try:
                send()
            except Exception:  # noqa: BLE001 - a failed delivery is recorded; it must not kill the pool
                log.exception("webhook for task %s failed", task_id)

    # -- delivery ------------------------------------------------------------------------------

    def deliver(self, task_id: str) -> dict | None:
        """Send the final state once (with retries); returns the recorded delivery state."""
        try:
            rec, _ = self.tasks.get(task_id)
        except TaskNotFound:
            return None
        if not rec.finished or not rec.webhook_url:
            return None
        with self._lock:
            self._started.discard(rec.id)
            self._progress.pop(rec.id, None)
        event = rec.status.value.lower()
        if not wanted(rec, event):
            return None
        msg_id = f"msg_{rec.id}"
        state_key = task_key(rec.id, "webhook.json")
        state: dict[str, Any] = {"id": msg_id, "url": rec.webhook_url, "state": "sending", "attempts": 0,
                                 "gateway": self.settings.gateway_id, "last_status": None, "last_error": None,
                                 # create_json takes an identical body for its own retried write: make each
                                 # claim unique, so a second notification of the same task loses.
                                 "claim": secrets.token_hex(8)}
        try:
            self.store.create_json(state_key, state, {})
        except AlreadyExists:
            return None  # another notification, or another gateway, has it
        self._send(rec, event, msg_id, state, retry=True, save=lambda: self._save(state_key, state))
        self._save(state_key, state)
        return state

    def _send_event(self, rec: TaskRecord, event: str, msg_id: str, retry: bool) -> None:
        state: dict[str, Any] = {"id": msg_id, "state": "sending", "attempts": 0, "last_status": None,
                                 "last_error": None}
        self._send(rec, event, msg_id, state, retry=retry, save=lambda: None)

    def _send(self, rec: TaskRecord, event: str, msg_id: str, state: dict[str, Any], retry: bool,
              save: Callable[[], None]) -> None:
        """Post one message (retried when `retry`); `state` records how it went."""
        payload = {"type": f"job.{event}", "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
                   "data": self.render(rec)}
        body = json.dumps(payload, separators=(",", ":")).encode()
        signer = Webhook(decode_secret(self.secret_for(rec.key_id)))

        def attempt() -> None:
            state["attempts"] += 1
            try:
                status = self._post(rec.webhook_url or "", msg_id, signer, body)
            except FetchError as exc:
                WEBHOOK_ATTEMPTS.labels("error").inc()
                state["last_status"], state["last_error"] = None, str(exc)
                if exc.code == "url_forbidden_address":
                    state["last_error"] += f" (the gateway's setting {ALLOW_SETTING} can allow its network)"
                if exc.code in ("url_forbidden_address", "url_scheme"):
                    raise  # the address is refused: retrying cannot help
                raise _Transient(str(exc)) from exc
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                WEBHOOK_ATTEMPTS.labels("error").inc()
                state["last_status"], state["last_error"] = None, f"{type(exc).__name__}: {exc}"
                raise _Transient(str(exc)) from exc
            WEBHOOK_ATTEMPTS.labels(f"{status // 100}xx").inc()
            state["last_status"] = status
            if not 200 <= status < 300:
                state["last_error"] = f"the receiver answered HTTP {status}"
                save()
                if status == 410:  # Gone: the receiver asks for no more deliveries
                    raise FetchError("url_http_error", state["last_error"])
                raise _Transient(state["last_error"])
            state["last_error"] = None

        backoff = self.settings.webhook_backoff_seconds
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.settings.webhook_max_attempts if retry else 1),
            wait=wait_exponential(multiplier=backoff, min=backoff, max=self.settings.webhook_backoff_max_seconds)
            + wait_random(0, backoff / 4),
            # Sleeping on the stop event lets a shutting-down gateway end waiting retries at once.
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
            state["state"] = "delivered"
        except (_Transient, FetchError, RetryError):
            state["state"] = "failed"
            log.warning("webhook %s (%s) to %s failed after %d attempts: %s", msg_id, event, rec.webhook_url,
                        state["attempts"], state["last_error"])
        WEBHOOK_DELIVERIES.labels(event, state["state"]).inc()

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Transient("the gateway is shutting down")

    def _save(self, key: str, state: dict) -> None:
        self.store.put_bytes(key, json.dumps(state).encode(), "application/json")

    def _post(self, url: str, msg_id: str, signer: Webhook, body: bytes) -> int:
        """One attempt; returns the HTTP status. Connects only to addresses the policy allows."""
        timeout = self.settings.webhook_timeout_seconds
        target = check_url(url)
        now = datetime.now(UTC)
        headers = [
            (b"Host", target.netloc),
            (b"User-Agent", USER_AGENT.encode()),
            (b"Content-Type", b"application/json"),
            (b"webhook-id", msg_id.encode()),
            (b"webhook-timestamp", str(int(now.timestamp())).encode()),
            (b"webhook-signature", signer.sign(msg_id, now, body).encode()),
        ]
        if (rid := REQUEST_ID.get()) != "-":
            headers.append((b"X-Request-ID", rid.encode()))
        backend = GuardedBackend(self.policy, time.monotonic() + timeout, timeout)
        with httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=backend,
                                     max_connections=1, retries=0) as pool:
            response = pool.request(
                "POST",
                httpcore.URL(scheme=target.raw_scheme, host=target.raw_host,
                             port=target.port or DEFAULT_PORTS[target.scheme],
                             target=target.raw_path),
                headers=headers, content=body,
                extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
            )
            if response.status >= 300:
                log.info("webhook %s: HTTP %d %r", msg_id, response.status, response.content[:_LOGGED_BODY])
            return response.status
