"""What every request handler needs, built once at start: settings, store, tasks, dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from libs.store.client import ObjectStore
from libs.tasks import TaskRecord, TaskStore
from services.gateway.clients import Clients
from services.gateway.dispatcher import Dispatcher
from services.gateway.settings import GatewaySettings


@dataclass
class Gateway:
    """The gateway's long-lived parts."""

    settings: GatewaySettings
    store: ObjectStore
    tasks: TaskStore
    clients: Clients
    dispatcher: Dispatcher

    async def record(self, task_id: str) -> TaskRecord:
        """A task's record for a status answer: recent enough, and without a thread hop when
        this gateway saw it within `status_max_age_seconds`. Raises TaskNotFound. Read-only."""
        rec = self.tasks.recent(task_id, self.settings.status_max_age_seconds)
        if rec is None:
            rec, _ = await run_in_threadpool(self.tasks.get, task_id)
        return rec


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
