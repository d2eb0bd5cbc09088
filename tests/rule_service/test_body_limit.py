"""Request bodies over `max_body_bytes` get 413 naming the size and the limit, over real HTTP.

Each test starts a server with a 2,000-byte limit. Bodies are sent with a
`Content-Length` (rejected before they are read) and chunked (counted while
they stream in).
"""

import json
import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI

from rule_service.app import create_app
from rule_service.service import RuleService
from rule_service.settings import Settings
from tests.conftest import LiveServer

LIMIT = 2000
SEARCH = "/v1/rules/search"


@pytest.fixture
def small(start_server: Callable[[FastAPI], LiveServer], bundled_service: RuleService) -> Iterator[httpx.Client]:
    settings = bundled_service.settings.model_copy(update={"max_body_bytes": LIMIT})
    with start_server(create_app(settings, service=bundled_service)).client() as http:
        yield http


def _body(size: int) -> bytes:
    """A valid search request of exactly `size` bytes, padded with JSON whitespace."""
    head = b'{"query": "how do I prune a tree"'
    return head + b" " * (size - len(head) - 1) + b"}"


def _chunks(data: bytes, size: int = 500) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _post(http: httpx.Client, content: bytes | Iterator[bytes]) -> httpx.Response:
    return http.post(SEARCH, content=content, headers={"Content-Type": "application/json"})


def test_default_limit() -> None:
    assert Settings().max_body_bytes == 1024 * 1024


def test_env_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_MAX_BODY_BYTES", "4096")
    assert Settings().max_body_bytes == 4096


def test_at_limit(small: httpx.Client) -> None:
    assert _post(small, _body(LIMIT)).status_code == 200


def test_over_limit(small: httpx.Client) -> None:
    assert _post(small, _body(LIMIT + 1)).status_code == 413


def test_over_limit_body(small: httpx.Client) -> None:
    body = _post(small, _body(LIMIT + 1)).json()
    assert body == {
        "message": f"request body is {LIMIT + 1} bytes; the limit is {LIMIT} (ASCL_MAX_BODY_BYTES)",
        "detail": None,
    }


def test_over_limit_json_type(small: httpx.Client) -> None:
    assert _post(small, _body(LIMIT + 1)).headers["content-type"] == "application/json"


def test_over_limit_request_id(small: httpx.Client) -> None:
    assert _post(small, _body(LIMIT + 1)).headers.get("x-request-id")


def test_chunked_at_limit(small: httpx.Client) -> None:
    assert _post(small, _chunks(_body(LIMIT))).status_code == 200


def test_chunked_is_chunked(small: httpx.Client) -> None:
    request = small.build_request("POST", SEARCH, content=_chunks(_body(10)))
    assert request.headers.get("transfer-encoding") == "chunked"


def test_chunked_over_limit(small: httpx.Client) -> None:
    assert _post(small, _chunks(_body(LIMIT * 3))).status_code == 413


def test_chunked_over_limit_message(small: httpx.Client) -> None:
    # The server may receive several chunks in one read, so the count is anything past the limit.
    message = _post(small, _chunks(_body(LIMIT * 3))).json()["message"]
    match = re.fullmatch(r"request body is at least (\d+) bytes; the limit is 2000 \(ASCL_MAX_BODY_BYTES\)", message)
    assert match is not None
    assert LIMIT < int(match.group(1)) <= LIMIT * 3


def test_chunked_body_intact(small: httpx.Client) -> None:
    query = "how do I prune a tree " + "é" * 100
    data = json.dumps({"query": query}, ensure_ascii=False).encode()
    direct = _post(small, data).json()
    assert _post(small, _chunks(data, 7)).json() == direct


def test_get_unaffected(small: httpx.Client) -> None:
    assert small.get("/healthz").status_code == 200


def test_default_server_accepts(client: httpx.Client) -> None:
    assert _post(client, _body(LIMIT * 10)).status_code == 200
