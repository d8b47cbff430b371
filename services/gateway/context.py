"""What every request handler needs, built once at start: settings, store, tasks, dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from libs.store.client import ObjectStore
from libs.tasks import TaskStore
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


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(_gateway)]
