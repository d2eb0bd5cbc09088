"""A pure-ASGI middleware that caps the size of request bodies.

A declared `Content-Length` over the limit is rejected before any of the
body is read. A chunked body (no `Content-Length`) is read here up to the
limit while its bytes are counted, then handed to the app unchanged. One byte
past the limit ends the request with 413. The limit is small (1 MiB by
default), so buffering a chunked body in memory is bounded by it.
"""

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

SETTING_NAME = "ASCL_MAX_BODY_BYTES"


class BodyLimitMiddleware:
    """Middleware that returns 413 with a JSON error body when a request body exceeds `max_body_bytes`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        declared = _content_length(headers.get(b"content-length"))
        if declared is not None:
            if declared > self.max_body_bytes:
                await self._reject(send, f"request body is {declared} bytes")
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        chunks, size, more = await self._read_chunked(receive)
        if more:
            await self._reject(send, f"request body is at least {size} bytes")
            return
        await self.app(scope, _replay(chunks, receive), send)

    async def _read_chunked(self, receive: Receive) -> tuple[list[Message], int, bool]:
        """Read body messages until the body ends or exceeds the limit; the flag is True when it exceeds it."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, size, False
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return messages, size, True
            if not message.get("more_body", False):
                return messages, size, False

    async def _reject(self, send: Send, size_text: str) -> None:
        message = f"{size_text}; the limit is {self.max_body_bytes} ({SETTING_NAME})"
        logger.info("request rejected: %s", message)
        body = json.dumps({"message": message, "detail": None}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read, so the connection cannot be reused.
                (b"connection", b"close"),
            ],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(value: bytes | None) -> int | None:
    """Parse a Content-Length header, or return None when it is missing or not a number.

    The HTTP server itself rejects a malformed Content-Length before the app runs.
    """
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a `receive` that returns the buffered messages first, then defers to the real one."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
