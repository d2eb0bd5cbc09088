"""Prometheus metrics, one registry per app so several apps can share a process."""

from dataclasses import dataclass, field

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

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
        self.search_seconds = Histogram(
            "ascl_search_seconds", "Time spent in one search call, encoding and ranking.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "ascl_encode_batch_size", "Texts embedded per encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ascl_encode_batch_seconds", "Duration of one encoder call.",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.rules = Gauge("ascl_rules", "Rules loaded per ruleset.", ["ruleset"], registry=self.registry)
        self.ready = Gauge("ascl_ready", "1 when the index is loaded and searches are served.", registry=self.registry)


class CacheCollector(Collector):
    """Exports the cache counters at scrape time: query embeddings, and ranked results of the current service."""

    def __init__(self, stats: Any, result_stats: Callable[[], Any] | None = None) -> None:
        self.stats = stats
        self.result_stats = result_stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("ascl_query_cache_hits", "Query embeddings served from the cache.", value=self.stats.cache_hits)
        yield CounterMetricFamily("ascl_query_cache_misses", "Query embeddings that had to be computed.", value=self.stats.cache_misses)
        if self.result_stats is not None:
            # The counters restart at a reload, because the new service has a new cache.
            results = self.result_stats()
            yield CounterMetricFamily("ascl_result_cache_hits", "Searches answered from the result cache since the last reload.", value=results.hits)
            yield CounterMetricFamily("ascl_result_cache_misses", "Searches that had to be ranked since the last reload.", value=results.misses)
