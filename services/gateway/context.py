"""What every request handler needs, built once at start: settings, store, tasks, dispatcher."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from libs.store.client import ObjectStore
from libs.tasks import TaskRecord, TaskStore
from services.gateway.clients import Clients
from services.gateway.dispatcher import Dispatcher
from services.gateway.portrait import PortraitChecker
from services.gateway.settings import GatewaySettings


@dataclass
class Gateway:
    """The gateway's long-lived parts."""

    settings: GatewaySettings
    store: ObjectStore
    tasks: TaskStore
    clients: Clients
    dispatcher: Dispatcher
    # the face check of uploaded portraits (None: switched off by settings.face_check)
    portraits: PortraitChecker | None = None
    _reads: dict[str, asyncio.Future] = field(default_factory=dict, repr=False)

    async def record(self, task_id: str) -> TaskRecord:
        """A task's record for a status answer: recent enough, and without a thread hop when
        this gateway saw it within `status_max_age_seconds`. Raises TaskNotFound. Read-only."""
        rec = self.tasks.recent(task_id, self.settings.status_max_age_seconds)
        if rec is not None:
            return rec
        # One store read per task at a time: when the remembered copy ages out under load, the
        # other pollers of that task wait for this read instead of queueing reads of their own.
        pending = self._reads.get(task_id)
        if pending is None:
            pending = asyncio.ensure_future(run_in_threadpool(self.tasks.get, task_id))
            self._reads[task_id] = pending
            pending.add_done_callback(lambda _: self._reads.pop(task_id, None))
        rec, _ = await asyncio.shield(pending)
        return rec


async def _gateway(request: Request) -> Gateway:
    # async: FastAPI runs a plain def dependency on the thread pool, a hop on every request.
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
