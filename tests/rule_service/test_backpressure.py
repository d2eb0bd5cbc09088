"""Back-pressure: a full encoder queue returns 503 with Retry-After, and the rule clients wait and retry.

The server is the real app over the bundled corpus with room for one job
in its encoder queue (ASCL_ENCODE_QUEUE_SIZE=1), so a burst of distinct
queries overflows it: one job waits while the encoder embeds another, and
the requests that find the queue full are turned away at once.
"""

import asyncio
import contextvars
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agent.clients import AsyncRuleClient, RuleClient
from rule_service.app import create_app
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import LiveServer

BURST = 48
CLIENT_BURST = 8
RETRY_AFTER_S = 1.0
# Enough attempts for every client of a burst to get its turn, a few at a time.
CLIENT_ATTEMPTS = 20
BASE_QUERY = "how do I pick the lock of my neighbour's front door"

_call = contextvars.ContextVar[int | None]("call", default=None)


@pytest.fixture(scope="module")
def tiny_queue_server(bundled_settings: Settings, bundled_service: RuleService) -> Iterator[LiveServer]:
    """The bundled service behind an app whose encoder queue has room for one job."""
    settings = bundled_settings.model_copy(update={"encode_queue_size": 1})
    live = LiveServer(create_app(settings, bundled_service)).start()
    yield live
    live.stop()


def distinct_queries(count: int) -> list[str]:
    """Return queries never sent before, so that the query cache cannot serve them."""
    run = uuid.uuid4().hex[:8]
    return [f"{BASE_QUERY} (case {run}-{number})" for number in range(count)]


async def _burst(base_url: str, queries: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(queries))
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        return await asyncio.gather(*(http.post("/v1/rules/search", json={"query": q, "top_k": 3}) for q in queries))


def test_burst_overflows_queue(tiny_queue_server: LiveServer) -> None:
    responses = asyncio.run(_burst(tiny_queue_server.base_url, distinct_queries(BURST)))

    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) == {200, 503}, statuses
    busy = [response for response in responses if response.status_code == 503]
    assert {response.headers.get("retry-after") for response in busy} == {"1"}
    assert all("encoder queue is full (1 jobs waiting)" in response.json()["message"] for response in busy)
    assert all(len(response.json()["results"]) == 3 for response in responses if response.status_code == 200)
    with httpx.Client(base_url=tiny_queue_server.base_url, timeout=60) as http:
        after = http.post("/v1/rules/search", json={"query": distinct_queries(1)[0]})
    assert after.status_code == 200, "the server takes work again once the burst has passed"


class _RetryCounter(logging.Handler):
    """Retry warnings of the rule clients, counted per call. Each call runs with its number in `_call`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: Counter[int] = Counter()
        self.delays: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "; retry " in message:
            self.retries[_call.get()] += 1
            self.delays.append(message.rsplit(" in ", 1)[1])


@pytest.fixture
def retry_counter() -> Iterator[_RetryCounter]:
    handler = _RetryCounter()
    logger = logging.getLogger("agent.clients")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _check_waited(counter: _RetryCounter, elapsed: dict[int, float], results: dict[int, int]) -> None:
    assert set(results.values()) == {3}, "every call must end with the rules"
    assert sum(counter.retries.values()) > 0, "the burst should have met a full queue at least once"
    assert set(counter.delays) == {"1.00 s"}, "each retry should wait the server's Retry-After, no back-off"
    for call, retries in counter.retries.items():
        assert elapsed[call] >= retries * RETRY_AFTER_S, (call, retries, elapsed[call])


def test_async_client_honours_retry_after(tiny_queue_server: LiveServer, retry_counter: _RetryCounter) -> None:
    elapsed: dict[int, float] = {}
    results: dict[int, int] = {}

    async def one(client: AsyncRuleClient, number: int, query: str) -> None:
        _call.set(number)
        started = time.monotonic()
        response = await client.search(query, top_k=3)
        elapsed[number] = time.monotonic() - started
        results[number] = len(response.results)

    async def main() -> None:
        async with AsyncRuleClient(tiny_queue_server.base_url, backoff_base=0,
                                   max_attempts=CLIENT_ATTEMPTS) as client:
            await asyncio.gather(*(one(client, n, q) for n, q in enumerate(distinct_queries(CLIENT_BURST))))

    asyncio.run(main())

    _check_waited(retry_counter, elapsed, results)


def test_sync_client_honours_retry_after(tiny_queue_server: LiveServer, retry_counter: _RetryCounter) -> None:
    elapsed: dict[int, float] = {}
    results: dict[int, int] = {}

    with RuleClient(tiny_queue_server.base_url, backoff_base=0, max_attempts=CLIENT_ATTEMPTS) as client:
        def one(number: int, query: str) -> None:
            _call.set(number)
            started = time.monotonic()
            response = client.search(query, top_k=3)
            elapsed[number] = time.monotonic() - started
            results[number] = len(response.results)

        with ThreadPoolExecutor(max_workers=CLIENT_BURST) as pool:
            list(pool.map(one, range(CLIENT_BURST), distinct_queries(CLIENT_BURST)))

    _check_waited(retry_counter, elapsed, results)
