"""What a native job's client asks of its webhooks and gets echoed back: the events to send
(`webhook_events`) and its own `metadata`, both read and checked when the job is created.

Events: `start` (the job began running), `progress` (while it runs, at most one per
`webhook_progress_interval_seconds`), `completed`, `failed`, `cancelled` (its final state).
Without `webhook_events` a webhook gets the final event only. `metadata` is any JSON object
of at most `MAX_METADATA_BYTES` (as compact JSON), kept with the job, shown on it and sent in
every webhook (as D-ID's `user_data` and HeyGen's `callback_id`).
"""

from __future__ import annotations

import json
from typing import Any

from libs.tasks import TaskRecord

START, PROGRESS = "start", "progress"
FINAL = ("completed", "failed", "cancelled")
EVENTS = (START, PROGRESS, *FINAL)
MAX_METADATA_BYTES = 4096


def wanted(rec: TaskRecord, event: str) -> bool:
    """Whether the job's webhook asked for this event."""
    return event in (rec.webhook_events if rec.webhook_events is not None else FINAL)


def parse_events(value: Any) -> list[str]:
    """`webhook_events` as sent: a JSON list, or names separated by commas (a form field). ValueError if bad."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"webhook_events must be a non-empty list of event names: {', '.join(EVENTS)}")
    unknown = [v for v in value if v not in EVENTS]
    if unknown:
        raise ValueError(f"webhook_events: unknown event {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(EVENTS)}")
    return [e for e in EVENTS if e in value]  # a set, in the order the events happen


def parse_metadata(value: Any) -> dict[str, Any]:
    """`metadata` as sent: a JSON object (in a form field, its JSON text). ValueError if bad or too large."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("metadata must be a JSON object")
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata has {size} bytes as JSON; at most {MAX_METADATA_BYTES} are kept")
    return value
