"""The result cache: a repeated request (same parameters, same input bytes) is answered at once.

An entry `cache/<api>/<key>.json` names the task that made the result. A hit makes a new,
already COMPLETED task whose outputs are copies, so it downloads with its own id and lives
its own retention time. The work is shared across API keys, never the source: the new task
belongs to the caller and nothing in it (message, parameters) names the task it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from libs.store.client import NotFound, ObjectStore
from libs.tasks import TaskNotFound, TaskRecord, TaskStatus
from services.gateway.keys import task_key

if TYPE_CHECKING:
    from services.gateway.context import Gateway

log = logging.getLogger(__name__)


def result_cache_key(api: str, params: dict, input_digests: dict[str, str]) -> str:
    """Hash of the parameters as the client sent them and the contents of every input."""
    blob = json.dumps({"api": api, "params": params, "inputs": input_digests}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _entry(api: str, key: str) -> str:
    return f"cache/{api}/{key}.json"


def remember(store: ObjectStore, record: TaskRecord) -> None:
    """Point the cache entry of a finished task's key at it."""
    key = record.cache_key
    if key:
        body = json.dumps({"task_id": record.id}).encode()
        store.put_bytes(_entry(record.api, key), body, content_type="application/json")


def serve_from_cache(gw: Gateway, key: str, task_id: str, api: str, params: dict,
                     inputs: dict[str, str], key_id: str | None) -> TaskRecord | None:
    """Create `task_id`, owned by `key_id`, as a finished copy of the cached result, or return None
    on a miss."""
    try:
        source_id = json.loads(gw.store.get_bytes(_entry(api, key)))["task_id"]
        source, _ = gw.tasks.get(source_id)
    except (NotFound, TaskNotFound, KeyError, ValueError):
        return None
    if source.status != TaskStatus.COMPLETED:
        return None
    outputs = {}
    try:
        for name, src in source.outputs.items():
            dst = task_key(task_id, "outputs", src.rsplit("/", 1)[-1])
            gw.store.copy(src, dst)
            outputs[name] = dst
    except NotFound:
        gw.store.delete_prefix(task_key(task_id))
        return None
    record = TaskRecord(
        id=task_id, kind=source.kind, api=api, status=TaskStatus.COMPLETED, progress=1.0,
        message="Video generated successfully (served from the result of an identical request)",
        params=params, cache_key=key, cached=True, inputs=inputs, outputs=outputs,
        engine=source.engine, result=source.result, key_id=key_id,
    )
    gw.tasks.create(record)
    log.info("task %s served from the cached result of %s", task_id, source_id)
    return record
