"""Limits of `ascl serve` below the app: header size, slow clients, idle keep-alive and connection count.

These limits live in uvicorn's protocol layer, which only `ascl serve`
configures, so the tests run it as a subprocess with short time-outs and talk
to it over raw sockets where an HTTP client would hide the behaviour.
"""

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from rule_service.http_server import uvicorn_options
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.rule_service.serve_support import ServeProcess, serve_process

MAX_HEADER_BYTES = 4096
READ_TIMEOUT_S = 2.0
# Shorter than the read time-out, so that an idle keep-alive connection is closed by the keep-alive timer.
KEEPALIVE_TIMEOUT_S = 0.5
MAX_CONNECTIONS = 4
# A closed connection must be noticed within the time-out plus this much, on a busy 2-core machine.
GRACE_S = 4.0


@pytest.fixture(scope="module")
def limited(bundled_service: RuleService, bundled_index_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """`ascl serve` over the bundled corpus with small header, time-out and connection limits."""
    env = {
        "ASCL_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "ASCL_REQUEST_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "ASCL_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S),
        "ASCL_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    args = ["--index-dir", str(bundled_index_dir), "--log-level", "INFO"]
    with serve_process(tmp_path_factory.mktemp("limits"), args, env) as served:
        yield served


def _connect(served: ServeProcess) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", served.port), timeout=READ_TIMEOUT_S + GRACE_S)
    return connection


def _read_until_closed(connection: socket.socket) -> tuple[bytes, float]:
    """Read until the server closes the connection; return the bytes and the seconds it took."""
    started = time.monotonic()
    received = b""
    while True:
        chunk = connection.recv(65536)
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response else 0


def _json_body(response: bytes) -> dict[str, object]:
    return json.loads(response.partition(b"\r\n\r\n")[2])


# Header size


def test_header_below_limit_200(limited: ServeProcess) -> None:
    response = httpx.get(f"{limited.base_url}/healthz", headers={"X-Padding": "a" * (MAX_HEADER_BYTES // 2)})

    assert response.status_code == 200


def test_header_above_limit_431(limited: ServeProcess) -> None:
    response = httpx.get(f"{limited.base_url}/healthz", headers={"X-Padding": "a" * (MAX_HEADER_BYTES * 2)})

    assert response.status_code == 431
    assert response.json()["message"] == f"request line and headers exceed {MAX_HEADER_BYTES} bytes (ASCL_MAX_HEADER_BYTES)"


def test_many_headers_above_limit_431(limited: ServeProcess) -> None:
    headers = {f"X-Field-{n}": "b" * 100 for n in range(MAX_HEADER_BYTES // 100)}

    assert httpx.get(f"{limited.base_url}/healthz", headers=headers).status_code == 431


def test_long_url_above_limit_431(limited: ServeProcess) -> None:
    assert httpx.get(f"{limited.base_url}/v1/rules?category={'c' * MAX_HEADER_BYTES}").status_code == 431


def test_server_survives_oversized_headers(limited: ServeProcess) -> None:
    httpx.get(f"{limited.base_url}/healthz", headers={"X-Padding": "a" * (MAX_HEADER_BYTES * 4)})

    assert httpx.get(f"{limited.base_url}/healthz").status_code == 200


# Slow clients


def test_partial_headers_408_after_timeout(limited: ServeProcess) -> None:
    with _connect(limited) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response, seconds = _read_until_closed(connection)

    assert _status(response) == 408
    assert "ASCL_REQUEST_READ_TIMEOUT_S" in str(_json_body(response)["message"])
    assert READ_TIMEOUT_S * 0.9 <= seconds <= READ_TIMEOUT_S + GRACE_S


def test_trickled_headers_closed_after_timeout(limited: ServeProcess) -> None:
    """Bytes arriving now and then do not extend the deadline: it covers the whole request."""
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 100
    started = time.monotonic()
    with _connect(limited) as connection:
        connection.settimeout(0.2)
        received = b""
        for byte in request:
            try:
                connection.sendall(bytes([byte]))
                received += connection.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if received:
                break
        seconds = time.monotonic() - started

    assert _status(received) == 408
    assert seconds <= READ_TIMEOUT_S + GRACE_S


def test_idle_connection_closed(limited: ServeProcess) -> None:
    with _connect(limited) as connection:
        response, seconds = _read_until_closed(connection)

    assert response == b""
    assert READ_TIMEOUT_S * 0.9 <= seconds <= READ_TIMEOUT_S + GRACE_S


def test_partial_body_closed_after_timeout(limited: ServeProcess) -> None:
    body = b'{"query": "how do I kill a zombie process in linux"}'
    head = (b"POST /v1/rules/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with _connect(limited) as connection:
        connection.sendall(head + body[:10])
        response, seconds = _read_until_closed(connection)

    assert response == b""
    assert READ_TIMEOUT_S * 0.9 <= seconds <= READ_TIMEOUT_S + GRACE_S
    assert "Traceback" not in limited.log_text()


def test_idle_keepalive_closed(limited: ServeProcess) -> None:
    with _connect(limited) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += connection.recv(65536)
        rest, seconds = _read_until_closed(connection)

    assert _status(first) == 200
    assert rest == b""
    assert seconds < READ_TIMEOUT_S * 0.9


def test_complete_request_answered(limited: ServeProcess) -> None:
    with _connect(limited) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        response, _ = _read_until_closed(connection)

    assert _status(response) == 200


def test_timeouts_logged(limited: ServeProcess) -> None:
    with _connect(limited) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        _read_until_closed(connection)

    assert "no complete request within 2.0 s (ASCL_REQUEST_READ_TIMEOUT_S), request was partly sent" in limited.log_text()


# Connection count


def test_connections_past_limit_503(limited: ServeProcess) -> None:
    with ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS):
            stack.enter_context(_connect(limited))
        over = httpx.get(f"{limited.base_url}/healthz")

    assert over.status_code == 503


def test_connections_at_limit_200(limited: ServeProcess) -> None:
    with ExitStack() as stack:
        for _ in range(MAX_CONNECTIONS - 1):
            stack.enter_context(_connect(limited))
        last = httpx.get(f"{limited.base_url}/healthz")

    assert last.status_code == 200


# Settings


def test_uvicorn_options_explicit() -> None:
    settings = Settings(max_header_bytes=8192, request_read_timeout_s=12, keepalive_timeout_s=3, max_connections=50)

    options = uvicorn_options(settings)

    assert options["h11_max_incomplete_event_size"] == 8192
    assert options["timeout_keep_alive"] == 3
    assert options["limit_concurrency"] == 51
    assert options["http"].request_read_timeout == 12


@pytest.mark.parametrize(("name", "value"), [
    ("ASCL_MAX_HEADER_BYTES", "100"),
    ("ASCL_REQUEST_READ_TIMEOUT_S", "0"),
    ("ASCL_KEEPALIVE_TIMEOUT_S", "-1"),
    ("ASCL_MAX_CONNECTIONS", "0"),
])
def test_limit_settings_validated(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match=name.removeprefix("ASCL_").lower()):
        Settings()
