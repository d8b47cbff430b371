"""The gateway's Prometheus metrics: queues, running tasks, task outcomes, HTTP requests, webhook
deliveries and the time tasks wait in the queue.

`kind` labels name a job kind as clients see it (`kinds.api_name`) (`portrait`, `emotion`, `redub` in the native
API, the task kind for the others: `echomimic_multi`, `person_train`, `chat`, ...). Queues
belong to model services, so the queue gauges are labelled by `service` (echomimic,
dicetalk, latentsync, voice): `talkserve_queue_depth{service}` is what the KEDA autoscaling
component scales model services on. Queue and running figures are read from the dispatcher
at scrape time, so they are never stale.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from services.gateway.live_sessions import LIVE_FAILOVERS, LIVE_OPENED, LIVE_SESSIONS

TASKS_FINISHED = Counter("talkserve_tasks_finished_total", "tasks that ended, by kind, status and reason",
                         ["kind", "status", "reason"])
TASK_SECONDS = Histogram("talkserve_task_seconds", "time from start to completion of completed tasks", ["kind"],
                         buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
QUEUE_WAIT_SECONDS = Histogram("talkserve_queue_wait_seconds",
                               "time from a task's creation until a gateway claimed it to run", ["kind"],
                               buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
HTTP_REQUESTS = Counter("talkserve_http_requests_total", "HTTP requests answered, by method, route template "
                        "and status", ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram("talkserve_http_request_seconds", "time to answer HTTP requests (event streams: "
                                 "until they end), by method and route template", ["method", "route"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
WEBHOOK_DELIVERIES = Counter("talkserve_webhook_deliveries_total", "webhook messages whose delivery ended, by "
                             "event and outcome (delivered, failed)", ["event", "outcome"])
WEBHOOK_ATTEMPTS = Counter("talkserve_webhook_attempts_total", "webhook POST attempts, by outcome (2xx, 4xx, 5xx, "
                           "error)", ["outcome"])


class DispatcherCollector:
    """Reports the dispatcher's queues as gauges when Prometheus scrapes."""

    def __init__(self, dispatcher):
        self._dispatcher = dispatcher

    def collect(self):
        depth = GaugeMetricFamily("talkserve_queue_depth", "tasks waiting for a free slot of a model service",
                                  labels=["service"])
        running = GaugeMetricFamily("talkserve_running_tasks", "tasks running on a model service",
                                    labels=["service"])
        replicas = GaugeMetricFamily("talkserve_replicas", "model-service replicas the gateway knows",
                                     labels=["service"])
        for service in self._dispatcher.queues:
            waiting, active = self._dispatcher.snapshot(service)
            depth.add_metric([service], len(waiting))
            running.add_metric([service], len(active))
            replicas.add_metric([service], len(self._dispatcher.clients.replicas.get(service, [])))
        yield from (depth, running, replicas)


def registry_for(dispatcher) -> CollectorRegistry:
    """A registry with the gateway's counters and histograms plus this dispatcher's live gauges."""
    registry = CollectorRegistry()
    registry.register(DispatcherCollector(dispatcher))
    for metric in (TASKS_FINISHED, TASK_SECONDS, QUEUE_WAIT_SECONDS, HTTP_REQUESTS, HTTP_REQUEST_SECONDS,
                   WEBHOOK_DELIVERIES, WEBHOOK_ATTEMPTS, LIVE_SESSIONS, LIVE_OPENED, LIVE_FAILOVERS):
        registry.register(metric)
    return registry
