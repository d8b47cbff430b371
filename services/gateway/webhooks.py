"""Webhooks: POST a job's final state to the URL given at its creation, signed, retried, never blocking.

Signing follows the Standard Webhooks scheme (standardwebhooks.com): headers `webhook-id`
(stable across the retries of one message), `webhook-timestamp` (Unix seconds of the
attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
Every API key has its own secret `whsec_<base64>`, derived from the gateway's master
secret, so one customer cannot forge another's webhooks; `GET /v1/webhooks/secret` tells a
key its secret.

A URL passes the media service's address rules (no loopback, private, link-local or
metadata addresses unless allowed by `webhook_allow_networks`) when the job is created and
again on every connection, through the same connect-time guarded backend the media service
fetches with, so DNS rebinding cannot turn a webhook against the internal network.

Exactly one gateway delivers each message: it claims `tasks/<id>/webhook.json` with a
create-only write and records the attempts there. Deliveries run on a small thread pool,
so a slow receiver never holds up the dispatcher.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import httpcore
import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from libs.safehttp import (
    DEFAULT_PORTS,
    AddressPolicy,
    FetchError,
    GuardedBackend,
    check_url,
    resolve,
)
from libs.store.client import AlreadyExists, NotFound, ObjectStore
from libs.tasks import TaskNotFound, TaskRecord, TaskStore, utcnow
from services.gateway.keys import task_key
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
MASTER_SECRET_KEY = "config/webhook-master-secret.json"
USER_AGENT = "talkserve-webhooks/1"
# A body this large is cut from the log line of a failed attempt.
_LOGGED_BODY = 200


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


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    mac = hmac.new(secret, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


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
                                 f"{parsed.host} resolves to {address} ({reason}); webhooks are not sent there")
    return url


class Webhooks:
    """Signs and delivers the final state of jobs created with a `webhook_url`."""

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

    # -- delivery ------------------------------------------------------------------------------

    def notify(self, task_id: str) -> None:
        """A unit of the task ended, or it was cancelled: deliver its final state if it has one."""
        if not self._stop.is_set():
            self._pool.submit(self._deliver_logged, task_id)

    def close(self) -> None:
        """Stop: waiting retries end now; a delivery in flight finishes its current attempt."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def state(self, task_id: str) -> dict | None:
        """What happened to the task's webhook so far (None before its final state)."""
        try:
            body, _, _ = self.store.read_json(task_key(task_id, "webhook.json"))
        except NotFound:
            return None
        return body

    def _deliver_logged(self, task_id: str) -> None:
        try:
            self.deliver(task_id)
        except Exception:  # noqa: BLE001 - a failed delivery is recorded; it must not kill the pool
            log.exception("webhook for task %s failed", task_id)

    def deliver(self, task_id: str) -> dict | None:
        """Send the final state once (with retries); returns the recorded delivery state."""
        try:
            rec, _ = self.tasks.get(task_id)
        except TaskNotFound:
            return None
        if not rec.finished or not rec.webhook_url:
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
        payload = {"type": f"job.{rec.status.value.lower()}", "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
                   "data": self.render(rec)}
        body = json.dumps(payload, separators=(",", ":")).encode()
        secret = decode_secret(self.secret_for(rec.key_id))

        def attempt() -> None:
            state["attempts"] += 1
            try:
                status = self._post(rec.webhook_url or "", msg_id, secret, body)
            except FetchError as exc:
                state["last_status"], state["last_error"] = None, str(exc)
                if exc.code == "url_forbidden_address" or exc.code == "url_scheme":
                    raise  # the address is refused: retrying cannot help
                raise _Transient(str(exc)) from exc
            except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
                state["last_status"], state["last_error"] = None, f"{type(exc).__name__}: {exc}"
                raise _Transient(str(exc)) from exc
            state["last_status"] = status
            if not 200 <= status < 300:
                state["last_error"] = f"the receiver answered HTTP {status}"
                self._save(state_key, state)
                if status == 410:  # Gone: the receiver asks for no more deliveries
                    raise FetchError("url_http_error", state["last_error"])
                raise _Transient(state["last_error"])
            state["last_error"] = None

        backoff = self.settings.webhook_backoff_seconds
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.settings.webhook_max_attempts),
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
            log.warning("webhook %s to %s failed after %d attempts: %s", msg_id, rec.webhook_url,
                        state["attempts"], state["last_error"])
        self._save(state_key, state)
        return state

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Transient("the gateway is shutting down")

    def _save(self, key: str, state: dict) -> None:
        self.store.put_bytes(key, json.dumps(state).encode(), "application/json")

    def _post(self, url: str, msg_id: str, secret: bytes, body: bytes) -> int:
        """One attempt; returns the HTTP status. Connects only to addresses the policy allows."""
        timeout = self.settings.webhook_timeout_seconds
        target = check_url(url)
        timestamp = int(time.time())
        headers = [
            (b"Host", target.netloc),
            (b"User-Agent", USER_AGENT.encode()),
            (b"Content-Type", b"application/json"),
            (b"webhook-id", msg_id.encode()),
            (b"webhook-timestamp", str(timestamp).encode()),
            (b"webhook-signature", sign(secret, msg_id, timestamp, body).encode()),
        ]
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
