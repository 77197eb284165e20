"""Prometheus metrics: request counts and latency per endpoint.

Each homeserver has its own registry, so several can run in one process
(tests, federation between embedded servers).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def register(self, router: Router) -> None:
        async def metrics(request: ApiRequest) -> Response:
            """GET /metrics — Prometheus text exposition."""
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        router.add("GET", "/metrics", metrics, auth="none")
