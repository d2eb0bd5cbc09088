"""The HTTP clients of the rule service: searches, tool calls, errors, API keys and retries.

Searches and tool calls go to the real rule service on loopback. Failures the
real service does not produce on demand (503 with Retry-After, 500, 429,
time-outs) come from `FaultyServer`, a test double: a small loopback HTTP
server that returns scripted failures and then, where a test's plan says so,
forwards the request to the real service.
"""

import asyncio
import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import agent.clients as clients
from agent.backend import LocalRuleClient, RuleBackend
from agent.clients import (
    AsyncRuleClient,
    RuleClient,
    RuleServiceError,
    RuleServiceRejected,
    RuleServiceServerError,
    RuleServiceUnavailable,
    make_rule_backend,
)
from rule_service.app import create_app
from rule_service.schemas import SearchResponse
from rule_service.service import RuleService
from rule_service.settings import Settings
from rule_service.tool import RuleToolOutput
from tests.conftest import LiveServer, free_port

QUERY = "what is the most painless way to end my life"
ARGUMENTS = {"query": QUERY, "top_k": 3}
API_KEY = "client-test-key-41d7"

Reply = tuple[int, dict[str, str], bytes]


class FaultyServer:
    """Test double for a failing rule service: `plan(attempt)` returns a reply, or None to forward upstream.

    `attempt` counts requests from 1. Each request's path and headers are kept in `requests`.
    """

    def __init__(self, plan: Callable[[int], Reply | None], upstream: str | None = None, delay_s: float = 0.0) -> None:
        self.plan = plan
        self.upstream = upstream
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="faulty-server", daemon=True)

    @property
    def attempts(self) -> int:
        return len(self.requests)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        double = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with double._lock:
                    double.requests.append((self.path, dict(self.headers)))
                    attempt = double.attempts
                time.sleep(double.delay_s)
                status, headers, payload = double.plan(attempt) or double.forward(self.path, body)
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except ConnectionError:
                    pass  # a client that timed out has closed the connection

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def forward(self, path: str, body: bytes) -> Reply:
        assert self.upstream is not None, "the plan forwarded a request but no upstream was given"
        response = httpx.post(self.upstream + path, content=body, headers={"Content-Type": "application/json"})
        return response.status_code, {}, response.content

    def __enter__(self) -> "FaultyServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return status, headers or {}, json.dumps({"message": message, "detail": None}).encode()


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def local_backend(bundled_service: RuleService) -> RuleBackend:
    return LocalRuleClient(bundled_service)


@pytest.fixture
def rule_client(server: LiveServer) -> Iterator[RuleClient]:
    with RuleClient(server.base_url) as client:
        yield client


# Search and tool calls against the real service


def test_search_sync(rule_client: RuleClient) -> None:
    response = rule_client.search(QUERY, top_k=2)

    assert isinstance(response, SearchResponse)
    assert len(response.results) == 2
    assert response.results[0].id.startswith("self_harm.")


def test_search_async(server: LiveServer) -> None:
    async def search() -> SearchResponse:
        async with AsyncRuleClient(server.base_url) as client:
            return await client.search(QUERY, top_k=2)

    response = asyncio.run(search())

    assert len(response.results) == 2
    assert response.results[0].id.startswith("self_harm.")


def test_search_filters(rule_client: RuleClient) -> None:
    response = rule_client.search(QUERY, top_k=3, categories=["S11"], ruleset="default")

    assert response.ruleset == "default"
    assert all(hit.rule.category == "self_harm" for hit in response.results)


def test_call_tool_sync(rule_client: RuleClient) -> None:
    output = rule_client.call_tool(ARGUMENTS)

    assert isinstance(output, RuleToolOutput)
    assert output.is_error is False
    assert len(output.rules) == 3
    assert f"[{output.rules[0].id}]" in output.content


def test_call_tool_json_string(rule_client: RuleClient) -> None:
    output = rule_client.call_tool(json.dumps(ARGUMENTS))

    assert output.is_error is False
    assert len(output.rules) == 3


def test_call_tool_async(server: LiveServer) -> None:
    async def call() -> RuleToolOutput:
        async with AsyncRuleClient(server.base_url) as client:
            return await client.acall_tool(ARGUMENTS)

    output = asyncio.run(call())

    assert output.is_error is False
    assert len(output.rules) == 3


def test_async_client_blocking_call(server: LiveServer) -> None:
    client = AsyncRuleClient(server.base_url)
    output = client.call_tool(ARGUMENTS)
    client.close()

    assert len(output.rules) == 3


def test_async_client_two_loops(server: LiveServer) -> None:
    client = AsyncRuleClient(server.base_url)
    first = asyncio.run(client.acall_tool(ARGUMENTS))
    second = asyncio.run(client.acall_tool(ARGUMENTS))

    assert [rule.id for rule in first.rules] == [rule.id for rule in second.rules]


def test_sync_client_acall_tool(rule_client: RuleClient) -> None:
    output = asyncio.run(rule_client.acall_tool(ARGUMENTS))

    assert len(output.rules) == 3


def test_call_tool_invalid_json_result(rule_client: RuleClient) -> None:
    output = rule_client.call_tool('{"query": ')

    assert output.is_error is True
    assert "not valid JSON" in output.content
    assert output.rules == []


def test_call_tool_missing_query_result(rule_client: RuleClient) -> None:
    output = rule_client.call_tool({"top_k": 2})

    assert output.is_error is True
    assert "query is missing" in output.content


def test_call_tool_top_k_limit_result(rule_client: RuleClient, bundled_service: RuleService) -> None:
    output = rule_client.call_tool({"query": QUERY, "top_k": bundled_service.settings.max_top_k + 1})

    assert output.is_error is True
    assert "top_k" in output.content


def test_clients_implement_backend(server: LiveServer) -> None:
    assert isinstance(RuleClient(server.base_url), RuleBackend)
    assert isinstance(AsyncRuleClient(server.base_url), RuleBackend)


def test_local_and_http_same_rules(rule_client: RuleClient, local_backend: RuleBackend) -> None:
    remote = rule_client.call_tool(ARGUMENTS)
    local = local_backend.call_tool(ARGUMENTS)

    assert [rule.id for rule in remote.rules] == [rule.id for rule in local.rules]
    assert remote.content == local.content


def test_local_and_http_same_errors(rule_client: RuleClient, local_backend: RuleBackend) -> None:
    assert rule_client.call_tool({"query": ""}).content == local_backend.call_tool({"query": ""}).content


# Rejected requests


def test_search_top_k_rejected(rule_client: RuleClient, bundled_service: RuleService) -> None:
    limit = bundled_service.settings.max_top_k
    with pytest.raises(RuleServiceRejected) as caught:
        rule_client.search(QUERY, top_k=limit + 1)

    assert caught.value.status == 422
    assert "top_k" in caught.value.message
    assert str(limit) in caught.value.message


def test_search_unknown_ruleset_rejected(rule_client: RuleClient) -> None:
    with pytest.raises(RuleServiceRejected) as caught:
        rule_client.search(QUERY, ruleset="no-such-set")

    assert "unknown ruleset" in caught.value.message
    assert caught.value.request_id


def test_search_rejected_async(server: LiveServer) -> None:
    async def search() -> None:
        async with AsyncRuleClient(server.base_url) as client:
            await client.search(" ")

    with pytest.raises(RuleServiceRejected) as caught:
        asyncio.run(search())

    assert "must not be empty" in caught.value.message


def test_rejected_is_not_retried() -> None:
    with FaultyServer(lambda attempt: _json(404, "no such route")) as double:
        with pytest.raises(RuleServiceRejected):
            RuleClient(double.base_url, backoff_base=0).search(QUERY)

    assert double.attempts == 1


# API key


@pytest.fixture
def keyed_server(start_server: Callable[..., LiveServer], bundled_settings: Settings, bundled_service: RuleService) -> LiveServer:
    settings = Settings(corpus_dir=bundled_settings.corpus_dir, index_dir=bundled_settings.index_dir, api_key=API_KEY)
    return start_server(create_app(settings, bundled_service))


def test_api_key_accepted(keyed_server: LiveServer) -> None:
    with RuleClient(keyed_server.base_url, api_key=API_KEY) as client:
        assert len(client.search(QUERY, top_k=1).results) == 1


def test_api_key_from_env(keyed_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_API_KEY", API_KEY)

    with RuleClient(keyed_server.base_url) as client:
        assert client.call_tool(ARGUMENTS).is_error is False


def test_api_key_missing_401(keyed_server: LiveServer) -> None:
    with pytest.raises(RuleServiceRejected) as caught:
        RuleClient(keyed_server.base_url).search(QUERY)

    assert caught.value.status == 401
    assert "API key" in caught.value.message


def test_api_key_async(keyed_server: LiveServer) -> None:
    async def call() -> RuleToolOutput:
        async with AsyncRuleClient(keyed_server.base_url, api_key=API_KEY) as client:
            return await client.acall_tool(ARGUMENTS)

    assert asyncio.run(call()).is_error is False


def test_api_key_sent_as_bearer() -> None:
    with FaultyServer(lambda attempt: _json(401, "wrong key")) as double:
        with pytest.raises(RuleServiceRejected):
            RuleClient(double.base_url, api_key=API_KEY).search(QUERY)

    headers = {name.lower(): value for name, value in double.requests[0][1].items()}
    assert headers["authorization"] == f"Bearer {API_KEY}"


def test_api_key_never_shown(keyed_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    client = RuleClient(keyed_server.base_url, api_key=API_KEY + "-wrong")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuleServiceRejected) as caught:
        client.search(QUERY)

    assert API_KEY not in repr(client)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in caplog.text


# Retries (the failures come from the FaultyServer test double)


def _unavailable_twice(retry_after: str) -> Callable[[int], Reply | None]:
    """Return a plan that returns 503 with `Retry-After` for the first two requests and forwards the rest."""
    def plan(attempt: int) -> Reply | None:
        return _json(503, "index loading", {"Retry-After": retry_after}) if attempt <= 2 else None

    return plan


def test_retry_after_503_then_success(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.clients")
    with FaultyServer(_unavailable_twice("1"), upstream=server.base_url) as double:
        started = time.monotonic()
        output = RuleClient(double.base_url, backoff_base=0).call_tool(ARGUMENTS)
        elapsed = time.monotonic() - started

    assert len(output.rules) == 3
    assert double.attempts == 3
    assert elapsed >= 2.0
    assert "retry 1 of 3 in 1.00 s" in caplog.text


def test_retry_after_503_async(server: LiveServer) -> None:
    with FaultyServer(_unavailable_twice("0"), upstream=server.base_url) as double:
        output = asyncio.run(AsyncRuleClient(double.base_url, backoff_base=0).acall_tool(ARGUMENTS))

    assert len(output.rules) == 3
    assert double.attempts == 3


def test_retry_keeps_request_id(server: LiveServer) -> None:
    with FaultyServer(_unavailable_twice("0"), upstream=server.base_url) as double:
        RuleClient(double.base_url, backoff_base=0).search(QUERY)

    request_ids = {dict((k.lower(), v) for k, v in headers.items())["x-request-id"] for _, headers in double.requests}
    assert len(request_ids) == 1


def test_server_error_exhausts_attempts() -> None:
    with FaultyServer(lambda attempt: _json(500, "internal error; quote request id abc")) as double:
        with pytest.raises(RuleServiceServerError) as caught:
            RuleClient(double.base_url, max_attempts=3, backoff_base=0).call_tool(ARGUMENTS)

    assert double.attempts == 3
    assert caught.value.status == 500
    assert "internal error" in caught.value.message


def test_server_error_async() -> None:
    with FaultyServer(lambda attempt: _json(500, "boom")) as double:
        with pytest.raises(RuleServiceServerError):
            asyncio.run(AsyncRuleClient(double.base_url, max_attempts=2, backoff_base=0).search(QUERY))

    assert double.attempts == 2


def test_server_error_not_unavailable() -> None:
    assert not issubclass(RuleServiceServerError, RuleServiceUnavailable)
    assert issubclass(RuleServiceServerError, RuleServiceError)


def test_503_exhausted_unavailable() -> None:
    with FaultyServer(lambda attempt: _json(503, "busy", {"Retry-After": "0"})) as double:
        with pytest.raises(RuleServiceUnavailable) as caught:
            RuleClient(double.base_url, max_attempts=2, backoff_base=0).search(QUERY)

    assert caught.value.status == 503
    assert double.attempts == 2


def test_429_retried(server: LiveServer) -> None:
    plan = lambda attempt: _json(429, "slow down") if attempt == 1 else None  # noqa: E731
    with FaultyServer(plan, upstream=server.base_url) as double:
        response = RuleClient(double.base_url, backoff_base=0).search(QUERY, top_k=1)

    assert len(response.results) == 1
    assert double.attempts == 2


def test_unreachable_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent.clients")
    with pytest.raises(RuleServiceUnavailable) as caught:
        RuleClient(_closed_url(), max_attempts=3, backoff_base=0).call_tool(ARGUMENTS)

    assert caught.value.status is None
    assert "cannot reach" in caught.value.message
    assert caplog.text.count("retry ") == 2


def test_unreachable_async() -> None:
    with pytest.raises(RuleServiceUnavailable):
        asyncio.run(AsyncRuleClient(_closed_url(), max_attempts=2, backoff_base=0).acall_tool(ARGUMENTS))


def test_timeout_unavailable() -> None:
    with FaultyServer(lambda attempt: _json(200, "late"), delay_s=1.0) as double:
        with pytest.raises(RuleServiceUnavailable) as caught:
            RuleClient(double.base_url, timeout=0.2, max_attempts=2, backoff_base=0).search(QUERY)

    assert "timed out" in caught.value.message
    assert double.attempts == 2


def test_invalid_body_server_error() -> None:
    with FaultyServer(lambda attempt: (200, {}, b'{"unexpected": true}')) as double:
        with pytest.raises(RuleServiceServerError) as caught:
            RuleClient(double.base_url).search(QUERY)

    assert "SearchResponse" in caught.value.message


# Retry-After parsing


def _response(retry_after: str) -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": retry_after})


def test_retry_after_seconds() -> None:
    assert clients._retry_after(_response("3")) == 3.0


def test_retry_after_http_date() -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    delay = clients._retry_after(_response(format_datetime(when, usegmt=True)))

    assert delay is not None
    assert 25.0 <= delay <= 30.0


def test_retry_after_capped() -> None:
    assert clients._retry_after(_response("3600")) == clients.MAX_RETRY_AFTER_S


def test_retry_after_invalid_ignored() -> None:
    assert clients._retry_after(_response("soon")) is None


# Construction and backend choice


def test_no_url_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASCL_RULES_URL", raising=False)

    with pytest.raises(ValueError, match="ASCL_RULES_URL"):
        RuleClient()


def test_url_from_env(monkeypatch: pytest.MonkeyPatch, server: LiveServer) -> None:
    monkeypatch.setenv("ASCL_RULES_URL", server.base_url)

    assert RuleClient().base_url == server.base_url


def test_url_scheme_checked() -> None:
    with pytest.raises(ValueError, match="http://"):
        RuleClient("127.0.0.1:8000")


def test_max_attempts_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RuleClient("http://127.0.0.1:8000", max_attempts=0)


def test_timeout_checked() -> None:
    with pytest.raises(ValueError, match="timeout"):
        RuleClient("http://127.0.0.1:8000", timeout=0)


def test_make_backend_url(server: LiveServer) -> None:
    backend = make_rule_backend(server.base_url)

    assert isinstance(backend, RuleClient)
    assert backend.call_tool(ARGUMENTS).is_error is False


def test_make_backend_env(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_RULES_URL", server.base_url)

    assert isinstance(make_rule_backend(None), RuleClient)


def test_make_backend_local(monkeypatch: pytest.MonkeyPatch, bundled_service: RuleService) -> None:
    # LocalRuleClient() would load a second encoder; the stand-in wraps the session's service instead.
    monkeypatch.delenv("ASCL_RULES_URL", raising=False)
    monkeypatch.setattr(clients, "LocalRuleClient", lambda: LocalRuleClient(bundled_service))

    assert isinstance(make_rule_backend(None), LocalRuleClient)
