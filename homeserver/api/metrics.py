"""Prometheus metrics: request counts and latency per endpoint.

Each homeserver has its own registry, so several can run in one process
(tests, federation between embedded servers).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from homeserver.api.http import ApiRequest, Response, Router


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("homeserver_http_requests", "HTTP requests handled",
                                ["method", "endpoint", "code"], registry=self.registry)
        self.latency = Histogram("homeserver_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "endpoint"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def count_from(self, name: str, documentation: str, label: str,
                   read: Callable[[], dict[str, float]]) -> None:
        """Expose counters kept elsewhere as plain integers (read at scrape time)."""
        self.registry.register(_ReadCounters(name, documentation, label, read))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # The labelled children, found once per (method, route, status): labels() takes a lock
        # and builds a key on every call, and a long-poll server observes 10,000 requests a second.
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(method, route, str(status)),
                                              self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)

    def register(self, router: Router) -> None:
        async def metrics(request: ApiRequest) -> Response:
            """GET /metrics — Prometheus text exposition."""
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        router.add("GET", "/metrics", metrics, auth="none")


class _ReadCounters:
    """A Prometheus collector over a function returning ``{label value: count}``."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        self._name, self._doc, self._label, self._read = name, documentation, label, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=[self._label])
        for value, count in self._read().items():
            family.add_metric([value], count)
        yield family
