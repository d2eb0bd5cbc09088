"""The result cache: a repeated search is answered without encoding or ranking, and never across filters."""

import httpx
import pytest

from rule_service.result_cache import ResultCache, search_key
from rule_service.service import RuleService


def _counter(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}_total ") or line.startswith(f"{name} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_repeat_search_hits_cache(client: httpx.Client):
    body = {"query": "result cache probe: how to hide a body", "top_k": 3}
    first = client.post("/v1/rules/search", json=body).json()
    hits = _counter(client, "ascl_result_cache_hits")
    encoded = _counter(client, "ascl_query_cache_misses")

    second = client.post("/v1/rules/search", json=body).json()

    assert second == first
    assert _counter(client, "ascl_result_cache_hits") == hits + 1
    assert _counter(client, "ascl_query_cache_misses") == encoded


@pytest.mark.parametrize("change", [{"top_k": 4}, {"categories": ["violent_crimes"]}, {"retriever": "bm25"},
                                    {"min_score": 0.2}])
def test_other_filters_miss_cache(client: httpx.Client, change: dict):
    body = {"query": "result cache probe: poison a neighbour's dog", "top_k": 3}
    client.post("/v1/rules/search", json=body)
    misses = _counter(client, "ascl_result_cache_misses")

    changed = client.post("/v1/rules/search", json={**body, **change})

    assert changed.status_code == 200
    assert _counter(client, "ascl_result_cache_misses") == misses + 1


def test_batch_mixes_cached_and_new(client: httpx.Client):
    cached = "result cache probe: forge a passport"
    single = client.post("/v1/rules/search", json={"query": cached, "top_k": 2}).json()

    batch = client.post("/v1/rules/batch_search",
                        json={"queries": ["result cache probe: stalk an ex", cached, cached], "top_k": 2}).json()

    assert [hit["id"] for hit in batch["results"][1]["results"]] == [hit["id"] for hit in single["results"]]
    assert batch["results"][1] == batch["results"][2]
    assert batch["results"][0]["query"] == "result cache probe: stalk an ex"


def test_cached_results_match_fresh_search(bundled_service: RuleService):
    queries = ["result cache probe: buy a gun without papers", "result cache probe: dose of paracetamol"]
    fresh = RuleService(bundled_service.settings, bundled_service.encoder, bundled_service.rulesets)

    assert fresh.cached_results(queries, 3) == [None, None]
    computed = fresh.search(queries, 3)
    assert fresh.cached_results(queries, 3) == computed
    assert fresh.cached_results(queries, 2) == [None, None]


def test_lru_evicts_oldest():
    cache = ResultCache(2)
    for name in ("a", "b", "c"):
        cache.put(name, [name])

    assert cache.get("a") is None
    assert cache.get("c") == ["c"]
    assert len(cache) == 2


def test_zero_size_stores_nothing():
    cache = ResultCache(0)
    cache.put("a", [1])

    assert cache.get("a") is None


def test_key_ignores_category_order():
    first = search_key("default", "hybrid", "q", 3, ["b", "a"], None)
    second = search_key("default", "hybrid", "q", 3, ["a", "b", "a"], None)

    assert first == second
