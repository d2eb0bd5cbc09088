"""HTTP clients of the rule service, their errors, and the choice between HTTP and in-process rules.

`RuleClient` and `AsyncRuleClient` both implement `RuleBackend`: each has a
blocking `call_tool` and a coroutine `acall_tool`. They differ in `search`,
which blocks on `RuleClient` and is a coroutine on `AsyncRuleClient`.

Every request is retried with exponential back-off and full jitter on
connection errors, time-outs, 429 and 5xx, honouring `Retry-After`. Searches
and tool calls only read the index, so repeating one is safe. A request
that still fails raises one of the `RuleServiceError` subclasses below.
"""

import asyncio
import email.utils
import json
import logging
import os
import random
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agent.backend import LocalRuleClient, RuleBackend
from rule_service.schemas import SearchResponse, ToolCallResponse
from rule_service.tool import TOOL_NAME, RuleToolOutput

logger = logging.getLogger(__name__)

RULES_URL_ENV = "ASCL_RULES_URL"
API_KEY_ENV = "ASCL_API_KEY"
REQUEST_ID_HEADER = "X-Request-ID"
MAX_RETRY_AFTER_S = 60.0
# 502, 503 and 504 mean that the service, or a proxy in front of it, cannot take the
# request now. Any other 5xx means that the service failed while handling it.
UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})

ModelT = TypeVar("ModelT", bound=BaseModel)


class RuleServiceError(Exception):
    """A rule service request that failed; `status` is None when no HTTP response arrived."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str | None = None) -> None:
        self.message = message
        self.status = status
        self.request_id = request_id
        super().__init__(message)


class RuleServiceUnavailable(RuleServiceError):
    """The service could not be reached, timed out, or still returned 429, 502, 503 or 504 after every retry."""


class RuleServiceRejected(RuleServiceError):
    """The service rejected the request with a 4xx other than 429; `message` is the server's explanation."""


class RuleServiceServerError(RuleServiceError):
    """The service still returned 500, or another 5xx not counted as unavailable, after every retry.

    Also raised when a 2xx body does not match the response schema.
    """


class _RuleClientBase:
    """Settings, request building and retry policy shared by the blocking and the async client."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        """Configure a client of the rule service at `base_url`, else at `$ASCL_RULES_URL`.

        `timeout` and `connect_timeout` are seconds per attempt. `max_attempts`
        counts the first try. Before retry n (from 1) the client sleeps a random
        time between 0 and min(backoff_max, backoff_base * 2**(n-1)) seconds,
        or the server's `Retry-After` when given, capped at 60 s.
        """
        url = base_url or os.environ.get(RULES_URL_ENV, "")
        if not url:
            raise ValueError(f"no rule service URL: pass base_url or set {RULES_URL_ENV}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {url!r})")
        _check_positive("timeout", timeout)
        _check_positive("connect_timeout", connect_timeout)
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (got {max_attempts})")
        _check_positive("backoff_base", backoff_base, allow_zero=True)
        _check_positive("backoff_max", backoff_max, allow_zero=True)

        self.base_url = url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        key = api_key or os.environ.get(API_KEY_ENV) or None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._sync_http: httpx.Client | None = None
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        # The API key stays out of reprs, tracebacks and logs.
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def call_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        """Run one tool call on the server; arguments it cannot parse come back with `is_error` set.

        Raises `RuleServiceError` when the service fails, not when the arguments are bad.
        """
        response = self._send_sync("/v1/tools/call", _tool_call_body(arguments))
        return _tool_output(self._parse(response, ToolCallResponse))

    def close(self) -> None:
        with self._sync_lock:
            if self._sync_http is not None:
                self._sync_http.close()
                self._sync_http = None

    def _sync_client(self) -> httpx.Client:
        # Worker threads of `acall_tool` may get here at once; the lock keeps them on one pool.
        with self._sync_lock:
            if self._sync_http is None:
                self._sync_http = httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
            return self._sync_http

    def _send_sync(self, path: str, body: dict[str, Any]) -> httpx.Response:
        request_id = uuid.uuid4().hex[:16]
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._sync_client().post(path, json=body, headers={REQUEST_ID_HEADER: request_id})
            except httpx.TransportError as exc:
                failure: httpx.Response | httpx.TransportError = exc
            else:
                if not _should_retry(response.status_code):
                    return self._checked(response, request_id)
                failure = response
            time.sleep(self._retry_delay(path, request_id, attempt, failure))
        raise AssertionError("unreachable: the last attempt raises")

    def _retry_delay(self, path: str, request_id: str, attempt: int, failure: httpx.Response | httpx.TransportError) -> float:
        """Return the seconds to wait before the next attempt; raise when no attempt is left."""
        reason = _describe_failure(failure)
        if attempt >= self.max_attempts:
            logger.warning("rule service request %s to %s failed after %d attempt(s): %s",
                           request_id, path, attempt, reason)
            raise _final_error(self.base_url, failure, request_id, attempt)
        retry_after = _retry_after(failure) if isinstance(failure, httpx.Response) else None
        if retry_after is None:
            delay = random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        else:
            delay = retry_after
        logger.warning("rule service request %s to %s failed (%s); retry %d of %d in %.2f s",
                       request_id, path, reason, attempt, self.max_attempts - 1, delay)
        return delay

    def _checked(self, response: httpx.Response, request_id: str) -> httpx.Response:
        """Return a 2xx response; raise `RuleServiceRejected` for a 4xx."""
        if response.is_success:
            return response
        message = _server_message(response)
        server_id = response.headers.get(REQUEST_ID_HEADER, request_id)
        logger.info("rule service rejected request %s to %s with %d: %s",
                    server_id, response.request.url.path, response.status_code, message)
        raise RuleServiceRejected(
            f"rule service rejected the request ({response.status_code}): {message}",
            status=response.status_code, request_id=server_id,
        )

    def _parse(self, response: httpx.Response, model: type[ModelT]) -> ModelT:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            request_id = response.headers.get(REQUEST_ID_HEADER)
            logger.warning("rule service response to request %s is invalid: %d error(s)", request_id, exc.error_count())
            raise RuleServiceServerError(
                f"rule service at {self.base_url} returned a response that is not a valid {model.__name__}: "
                f"{exc.errors()[0]['msg']}",
                status=response.status_code, request_id=request_id,
            ) from None


class RuleClient(_RuleClientBase):
    """Blocking HTTP client of the rule service; `acall_tool` runs the blocking call on a worker thread."""

    def search(
        self, query: str, *, top_k: int | None = None, categories: list[str] | None = None, ruleset: str | None = None,
    ) -> SearchResponse:
        """Rank the rules that apply to `query`; `None` filters take the server's defaults."""
        response = self._send_sync("/v1/rules/search", _search_body(query, top_k, categories, ruleset))
        return self._parse(response, SearchResponse)

    async def acall_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        # httpx.Client is thread-safe, so concurrent calls share its connection pool.
        return await asyncio.to_thread(self.call_tool, arguments)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRuleClient(_RuleClientBase):
    """Async HTTP client of the rule service; its blocking `call_tool` uses a separate blocking connection pool."""

    def __init__(self, base_url: str | None = None, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._async_http: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    async def search(
        self, query: str, *, top_k: int | None = None, categories: list[str] | None = None, ruleset: str | None = None,
    ) -> SearchResponse:
        """Rank the rules that apply to `query`; `None` filters take the server's defaults."""
        response = await self._send_async("/v1/rules/search", _search_body(query, top_k, categories, ruleset))
        return self._parse(response, SearchResponse)

    async def acall_tool(self, arguments: str | dict[str, Any]) -> RuleToolOutput:
        response = await self._send_async("/v1/tools/call", _tool_call_body(arguments))
        return _tool_output(self._parse(response, ToolCallResponse))

    async def aclose(self) -> None:
        self.close()
        if self._async_http is not None and self._async_loop is asyncio.get_running_loop():
            await self._async_http.aclose()
        self._async_http = None
        self._async_loop = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _async_client(self) -> httpx.AsyncClient:
        # An httpx.AsyncClient's connections belong to the event loop that opened them, so a
        # client used under a second `asyncio.run` gets a new pool instead of failing.
        loop = asyncio.get_running_loop()
        if self._async_http is None or self._async_loop is not loop:
            self._async_http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self._timeout)
            self._async_loop = loop
        return self._async_http

    async def _send_async(self, path: str, body: dict[str, Any]) -> httpx.Response:
        request_id = uuid.uuid4().hex[:16]
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self._async_client().post(path, json=body, headers={REQUEST_ID_HEADER: request_id})
            except httpx.TransportError as exc:
                failure: httpx.Response | httpx.TransportError = exc
            else:
                if not _should_retry(response.status_code):
                    return self._checked(response, request_id)
                failure = response
            await asyncio.sleep(self._retry_delay(path, request_id, attempt, failure))
        raise AssertionError("unreachable: the last attempt raises")


def make_rule_backend(rules_url: str | None = None) -> RuleBackend:
    """Return an HTTP client when `rules_url` or `$ASCL_RULES_URL` is set, else the bundled corpus in-process.

    The in-process client loads the encoder and the index, which takes a few seconds.
    """
    url = rules_url or os.environ.get(RULES_URL_ENV)
    if url:
        logger.info("rule tool calls go to the rule service at %s", url)
        return RuleClient(url)
    logger.info("no rule service URL given; loading the bundled rules in-process")
    return LocalRuleClient()


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {bound} seconds (got {value})")


def _tool_call_body(arguments: str | dict[str, Any]) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function", "function": {"name": TOOL_NAME, "arguments": text}}


def _search_body(query: str, top_k: int | None, categories: list[str] | None, ruleset: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "top_k": top_k, "categories": categories, "ruleset": ruleset}
    return {name: value for name, value in body.items() if value is not None}


def _tool_output(response: ToolCallResponse) -> RuleToolOutput:
    return RuleToolOutput(content=response.content, rules=response.rules,
                          is_error=response.is_error, index_version=response.index_version)


def _should_retry(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    """Return the delay that a `Retry-After` header requests, in seconds, capped at `MAX_RETRY_AFTER_S`."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _server_message(response: httpx.Response) -> str:
    """Return the `message` of a rule service error body, else the start of the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return response.text[:200]


def _describe_failure(failure: httpx.Response | httpx.TransportError) -> str:
    if isinstance(failure, httpx.Response):
        return f"HTTP {failure.status_code}"
    return f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__


def _final_error(base_url: str, failure: httpx.Response | httpx.TransportError, request_id: str, attempts: int) -> RuleServiceError:
    if isinstance(failure, httpx.TimeoutException):
        return RuleServiceUnavailable(
            f"rule service at {base_url} timed out on {attempts} attempt(s); check that it is running and not overloaded",
            request_id=request_id,
        )
    if isinstance(failure, httpx.TransportError):
        return RuleServiceUnavailable(
            f"cannot reach the rule service at {base_url} after {attempts} attempt(s): {_describe_failure(failure)}; "
            f"check the URL ({RULES_URL_ENV} or --rules-url) and that the service is running",
            request_id=request_id,
        )
    status = failure.status_code
    server_id = failure.headers.get(REQUEST_ID_HEADER, request_id)
    message = f"rule service at {base_url} returned {status} on {attempts} attempt(s): {_server_message(failure)}"
    if status in UNAVAILABLE_STATUSES:
        return RuleServiceUnavailable(message, status=status, request_id=server_id)
    return RuleServiceServerError(message, status=status, request_id=server_id)
