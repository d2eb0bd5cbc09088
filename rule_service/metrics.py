"""Prometheus metrics, one registry per app so several apps can share a process."""

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "ascl_http_requests_total", "HTTP requests by route, method and status.",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "ascl_http_request_duration_seconds", "HTTP request latency by route.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.queries = Counter(
            "ascl_search_queries_total", "Queries searched, by ruleset and retriever.",
            ["ruleset", "retriever"], registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "ascl_search_seconds", "Time spent in one search call (encoding and ranking).",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.rules = Gauge("ascl_rules", "Rules loaded per ruleset.", ["ruleset"], registry=self.registry)
        self.ready = Gauge("ascl_ready", "1 when the index is loaded and searches are served.", registry=self.registry)
