"""ASGI middleware that gives each request an id and counts and times it by route template.

It is plain ASGI rather than a `BaseHTTPMiddleware` because that class runs
every request through an extra task and memory streams, which cost more than
a cached search itself.
"""

import time
import uuid
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rule_service.metrics import Metrics

MAX_REQUEST_ID_CHARS = 64


class RequestObserver:
    """Set `request.state.request_id` (from X-Request-ID, else a new one), echo it, and record metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            # Printable ASCII only, so the id is safe to log and to echo in a header.
            text = "".join(char for char in value.decode("latin-1") if 32 < ord(char) < 127)
            if text:
                return text[:MAX_REQUEST_ID_CHARS]
    return uuid.uuid4().hex[:16]


__all__ = ["RequestObserver"]
