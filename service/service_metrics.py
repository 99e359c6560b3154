"""Prometheus metrics of the model service: calls, errors and latency per function.

Each service object gets a registry of its own (not prometheus-client's global one), so two
apps in one process (tests, or HTTP beside gRPC) never register the same metric twice.
"""
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The models answer in 5 to 50 ms on a small box; the upper buckets catch a loaded one.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("defect_service_calls", "Requests to a model function, good or bad",
                             ["function", "transport"], registry=self.registry)
        self.errors = Counter("defect_service_errors", "Requests answered with an error, by status",
                              ["function", "transport", "status"], registry=self.registry)
        self.latency = Histogram("defect_service_latency_seconds",
                                 "Time to serve a call that got the model's answer (decode and model)",
                                 ["function", "transport"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def watch_copies(self, host: Any) -> None:
        """Show a ModelHost's copies in use (now, and the most at once since the start) and the requests
        waiting for one, per function."""
        busy = Gauge("defect_service_copies_busy", "Model copies serving a request now",
                     ["function"], registry=self.registry)
        peak = Gauge("defect_service_copies_busy_peak", "The most model copies that served requests at once",
                     ["function"], registry=self.registry)
        waiting = Gauge("defect_service_copies_waiting", "Requests waiting for a free model copy",
                        ["function"], registry=self.registry)
        for name in host.functions:
            busy.labels(name).set_function(lambda name=name: host.busy[name])
            peak.labels(name).set_function(lambda name=name: host.busy_peak[name])
            waiting.labels(name).set_function(lambda name=name: host.waiting[name])
        copies = Gauge("defect_service_copies", "Model copies per function", ["function"], registry=self.registry)
        for name, function in host.functions.items():
            copies.labels(name).set(function.workers)

    def called(self, function: str, transport: str) -> None:
        self.calls.labels(function, transport).inc()

    def failed(self, function: str, transport: str, status: int | str) -> None:
        self.errors.labels(function, transport, str(status)).inc()

    def served(self, function: str, transport: str, seconds: float) -> None:
        self.latency.labels(function, transport).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
