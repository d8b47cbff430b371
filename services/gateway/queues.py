"""The gateway's queues: one FIFO per model service, of work items in creation order.

A work item is a whole task, or one segment of a task run in segments, so the segments of
one task spread over every replica with a free slot. Items sort by creation time, so every
gateway orders the same tasks the same way. The queues are not thread-safe: the dispatcher
holds its lock around every use.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field


class QueueFull(Exception):
    """The service's queue holds `max_queue` waiting tasks already."""


@dataclass(frozen=True, order=True)
class Item:
    """One unit of dispatch: a task, or segment `segment` of a task run in segments."""

    created: float
    task_id: str
    segment: int = -1  # -1: the whole task
    key_id: str | None = field(default=None, compare=False)  # whose task it is (queue views)
    not_before: float = field(default=0.0, compare=False)  # monotonic time before which it waits

    @property
    def unit(self) -> int | None:
        return None if self.segment < 0 else self.segment


class Queues:
    """The items waiting for each model service."""

    def __init__(self, services: list[str]):
        self.by_service: dict[str, collections.deque[Item]] = {s: collections.deque() for s in services}

    def __iter__(self):
        return iter(self.by_service)

    def __getitem__(self, service: str) -> collections.deque[Item]:
        return self.by_service[service]

    def values(self):
        return self.by_service.values()

    def insert(self, service: str, item: Item) -> None:
        """Insert keeping creation order (new tasks almost always go last)."""
        queue = self.by_service[service]
        index = len(queue)
        while index > 0 and queue[index - 1] > item:
            index -= 1
        queue.insert(index, item)

    def queued_units(self, task_id: str) -> set[int | None]:
        return {item.unit for queue in self.by_service.values() for item in queue if item.task_id == task_id}

    def task_ids(self) -> set[str]:
        return {item.task_id for queue in self.by_service.values() for item in queue}

    def drop(self, task_id: str) -> bool:
        """Remove every item of a task; True when there was one."""
        found = False
        for queue in self.by_service.values():
            for item in [i for i in queue if i.task_id == task_id]:
                queue.remove(item)
                found = True
        return found

    def waiting_ids(self, service: str, running: set[str]) -> list[str]:
        """Ids of the service's tasks that wait and have nothing `running`, in queue order."""
        ids: list[str] = []
        for item in self.by_service[service]:
            if item.task_id not in ids and item.task_id not in running:
                ids.append(item.task_id)
        return ids

    def owners(self, service: str) -> dict[str, str | None]:
        return {item.task_id: item.key_id for item in self.by_service[service]}

    def next_ready(self, service: str) -> float:
        """0 when a queued unit may run now, else the seconds until the first one may (inf: none queued).

        Units waiting out an outage step aside: the others behind them run meanwhile.
        """
        now = time.monotonic()
        wait = float("inf")
        for item in self.by_service[service]:
            if item.not_before <= now:
                return 0.0
            wait = min(wait, item.not_before - now)
        return wait

    def take(self, service: str) -> Item | None:
        """The first item that may run now, removed from its queue."""
        queue = self.by_service[service]
        item = next((i for i in queue if i.not_before <= time.monotonic()), None)
        if item is not None:
            queue.remove(item)
        return item
