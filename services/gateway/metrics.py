"""The gateway's Prometheus metrics: queue depth and running tasks per model kind, task outcomes.

`talkserve_queue_depth{kind}` is what the KEDA autoscaling component scales model services on.
Queue and running figures are read from the dispatcher at scrape time, so they are never stale.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

TASKS_FINISHED = Counter("talkserve_tasks_finished_total", "tasks that ended, by kind, status and reason",
                         ["kind", "status", "reason"])
TASK_SECONDS = Histogram("talkserve_task_seconds", "time from start to completion of completed tasks", ["kind"],
                         buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))


class DispatcherCollector:
    """Reports the dispatcher's queues as gauges when Prometheus scrapes."""

    def __init__(self, dispatcher):
        self._dispatcher = dispatcher

    def collect(self):
        depth = GaugeMetricFamily("talkserve_queue_depth", "tasks waiting for a free model-service slot",
                                  labels=["kind"])
        running = GaugeMetricFamily("talkserve_running_tasks", "tasks running on model services, by kind",
                                    labels=["kind"])
        replicas = GaugeMetricFamily("talkserve_replicas", "model-service replicas the gateway knows", labels=["kind"])
        for kind in self._dispatcher.queues:
            waiting, active = self._dispatcher.snapshot(kind)
            depth.add_metric([kind], len(waiting))
            running.add_metric([kind], len(active))
            replicas.add_metric([kind], len(self._dispatcher.clients.replicas.get(kind, [])))
        yield from (depth, running, replicas)


def registry_for(dispatcher) -> CollectorRegistry:
    """A registry with the task counters plus this dispatcher's live gauges."""
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(dispatcher))
    registry.register(TASKS_FINISHED)
    registry.register(TASK_SECONDS)
    return registry
