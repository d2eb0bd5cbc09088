"""The uvicorn settings of `ascl serve`: header size, slow clients, keep-alive and connection limits.

uvicorn 0.55 times out only idle keep-alive connections, and only after a
response: a client that connects and then sends part of a request, or sends
it a few bytes at a time, keeps its connection open indefinitely. `LimitedH11Protocol`
adds a deadline for receiving each whole request (line, headers and body),
counted from the connection or from the previous response, and answers an
oversized header block with 431 instead of uvicorn's generic 400.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rule_service.settings import Settings

logger = logging.getLogger(__name__)

# h11's own default, used when uvicorn is given no header limit.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024


class _RequestTrackingConnection(h11.Connection):
    """An h11 server connection that limits the request head, keeps the status hint of the last parse error
    and reports each complete request."""

    def __init__(self, max_header_bytes: int, on_request_received: Callable[[], None]) -> None:
        super().__init__(h11.SERVER, max_header_bytes)
        self.max_header_bytes = max_header_bytes
        self.rejected_status = 400
        self._on_request_received = on_request_received

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            # h11 applies its limit only while a head is incomplete in its buffer, so a head
            # that arrives whole in one read is measured here.
            if isinstance(event, h11.Request) and _head_size(event) > self.max_header_bytes:
                raise h11.RemoteProtocolError("request line and headers too large", error_status_hint=431)
        except h11.RemoteProtocolError as exc:
            # h11 hints 431 when the request line and headers outgrow the buffer limit.
            self.rejected_status = exc.error_status_hint
            raise
        if isinstance(event, h11.EndOfMessage):
            self._on_request_received()
        return event


def _head_size(request: h11.Request) -> int:
    """Return the size of a request line and headers as sent, give or take whitespace around header values."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    fields = sum(len(name) + len(value) + len(b": \r\n") for name, value in request.headers)
    return line + fields + len(b"\r\n")


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request and 431 for oversized headers.

    NOTE: it overrides methods of uvicorn 0.55's `H11Protocol`, which are not a public API;
    the tests in tests/rule_service/test_limits_http.py catch a change on upgrade.
    """

    request_read_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_header_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.conn = _RequestTrackingConnection(self.max_header_bytes, self._request_received)
        self._read_deadline: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Armed before the parent handles pipelined requests, which may complete at once and cancel it.
        self._arm_read_deadline()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self.conn.rejected_status != 431:
            super().send_400_response(msg)
            return
        message = f"request line and headers exceed {self.max_header_bytes} bytes (ASCL_MAX_HEADER_BYTES)"
        self._send_error(431, b"Request Header Fields Too Large", message)

    def _request_received(self) -> None:
        self._cancel_read_deadline()
        if self.conn.our_state is h11.DONE:
            # The response went out before the body ended, so the connection now waits for the next request.
            self._arm_read_deadline()

    def _arm_read_deadline(self) -> None:
        self._cancel_read_deadline()
        self._read_deadline = self.loop.call_later(self.request_read_timeout, self._read_timed_out)

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        head_started = bool(self.conn.trailing_data[0])
        partial = head_started or self.conn.their_state is h11.SEND_BODY
        # A connection opened and left unused is routine (browsers open spare ones), so it is logged at DEBUG.
        logger.log(
            logging.INFO if partial else logging.DEBUG,
            "closing connection from %s: no complete request within %.1f s (ASCL_REQUEST_READ_TIMEOUT_S)%s",
            client, self.request_read_timeout, ", request was partly sent" if partial else "",
        )
        if head_started and self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE:
            # Only the request line or headers arrived, so no app is handling it and a 408 can still be sent.
            message = f"request not received within {self.request_read_timeout:g} s (ASCL_REQUEST_READ_TIMEOUT_S)"
            self._send_error(408, b"Request Timeout", message)
            return
        self.transport.close()

    def _send_error(self, status: int, reason: bytes, message: str) -> None:
        """Send a JSON error in the API's format, then close the connection.

        The bytes are written directly: h11 refuses to send a response before
        it has parsed a request, and the connection closes right after anyway.
        """
        body = json.dumps({"message": message, "detail": None}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


def limited_protocol(request_read_timeout: float) -> type[LimitedH11Protocol]:
    """Return a `LimitedH11Protocol` subclass with this deadline, because uvicorn builds protocols from a class."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,), {"request_read_timeout": request_read_timeout})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Return the keyword arguments of `uvicorn.run` for `ascl serve`, every limit set explicitly."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": limited_protocol(settings.request_read_timeout_s),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keepalive_timeout_s,
        # uvicorn returns 503 once its open connections, the new one included, reach this number.
        "limit_concurrency": settings.max_connections + 1,
        "log_config": None,
        "log_level": settings.log_level.lower(),
    }
