"""Access control: the admin token, secrets kept out of logs and responses, CORS, and the API key on MCP over HTTP."""

import asyncio
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from rule_service.app import create_app
from rule_service.service import RuleService
from rule_service.settings import Settings
from rule_service.tool import TOOL_NAME
from tests.conftest import ASCL_BIN, REPO_ROOT, LiveServer, cli_env, free_port
from tests.rule_service.serve_support import wait_for_reload, wait_until

API_KEY = "api-key-3b9e51"
ADMIN_TOKEN = "admin-token-c07f22"
ALLOWED_ORIGIN = "https://app.example"
OTHER_ORIGIN = "https://evil.example"
SEARCH_BODY = {"query": "how do I kill a zombie process in linux", "top_k": 2}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def guarded(bundled_corpus_dir: Path, bundled_index_dir: Path, bundled_service: RuleService) -> Iterator[LiveServer]:
    """A live server with both an API key and an admin token, over the session's bundled service."""
    settings = Settings(corpus_dir=bundled_corpus_dir, index_dir=bundled_index_dir,
                        api_key=API_KEY, admin_token=ADMIN_TOKEN)
    live = LiveServer(create_app(settings, bundled_service)).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def guarded_client(guarded: LiveServer) -> Iterator[httpx.Client]:
    with guarded.client() as http:
        yield http


# Admin token


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/admin/reload"), ("GET", "/v1/admin/reload/abc")])
def test_admin_routes_absent_without_token(client: httpx.Client, method: str, path: str) -> None:
    assert client.request(method, path).status_code == 404


def test_admin_routes_not_documented_without_token(client: httpx.Client) -> None:
    assert not [path for path in client.get("/openapi.json").json()["paths"] if path.startswith("/v1/admin")]


def test_admin_missing_token_401(guarded_client: httpx.Client) -> None:
    response = guarded_client.post("/v1/admin/reload")

    assert response.status_code == 401
    assert "ASCL_ADMIN_TOKEN" in response.json()["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "x", ADMIN_TOKEN.upper()])
def test_admin_wrong_token_401(guarded_client: httpx.Client, token: str) -> None:
    assert guarded_client.post("/v1/admin/reload", headers=_bearer(token)).status_code == 401


def test_admin_basic_scheme_401(guarded_client: httpx.Client) -> None:
    response = guarded_client.post("/v1/admin/reload", headers={"Authorization": f"Basic {ADMIN_TOKEN}"})

    assert response.status_code == 401


def test_admin_api_key_403(guarded_client: httpx.Client) -> None:
    response = guarded_client.post("/v1/admin/reload", headers=_bearer(API_KEY))

    assert response.status_code == 403
    assert "does not grant admin access" in response.json()["message"]


def test_admin_token_not_api_key(guarded_client: httpx.Client) -> None:
    assert guarded_client.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(ADMIN_TOKEN)).status_code == 401


def test_admin_token_reads_status(guarded_client: httpx.Client) -> None:
    response = guarded_client.get("/v1/admin/reload/0123456789abcdef", headers=_bearer(ADMIN_TOKEN))

    assert response.status_code == 404
    assert "no recent reload" in response.json()["message"]


# Secrets never leave the process


def _exchange(http: httpx.Client) -> list[httpx.Response]:
    """Send requests that touch every way a secret could leak: auth failures, errors, info, metrics, a reload."""
    responses = [
        http.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(API_KEY)),
        http.post("/v1/rules/search", json=SEARCH_BODY, headers=_bearer(API_KEY + "-wrong")),
        http.post("/v1/rules/search", content=b"{not json", headers=_bearer(API_KEY) | {"content-type": "application/json"}),
        http.post("/v1/rules/search", json={"query": "knives", "top_k": 0}, headers=_bearer(API_KEY)),
        http.get("/v1/info", headers=_bearer(API_KEY)),
        http.get("/metrics", headers=_bearer(API_KEY)),
        http.get("/readyz"),
        http.post("/v1/admin/reload", headers=_bearer(ADMIN_TOKEN + "-wrong")),
        http.post("/v1/admin/reload", headers=_bearer(API_KEY)),
        http.get("/v1/admin/reload/0123456789abcdef", headers=_bearer(ADMIN_TOKEN)),
    ]
    accepted = http.post("/v1/admin/reload", headers=_bearer(ADMIN_TOKEN))
    wait_for_reload(http, accepted.json()["id"], _bearer(ADMIN_TOKEN))
    responses += [accepted, http.get("/v1/info", headers=_bearer(API_KEY))]
    return responses


def test_secrets_absent_from_logs_and_responses(guarded_client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    responses = _exchange(guarded_client)
    texts = [r.text + json.dumps(dict(r.headers)) for r in responses]
    logged = "\n".join(record.getMessage() for record in caplog.records)

    assert [r.status_code for r in responses[:2]] == [200, 401]
    assert responses[-1].json()["reload"]["status"] == "succeeded"
    assert "rule_service.reload" in {record.name for record in caplog.records}
    assert [text for text in texts if ADMIN_TOKEN in text] == []
    assert [text for text in texts if API_KEY in text] == []
    assert ADMIN_TOKEN not in logged
    assert API_KEY not in logged


def test_secrets_hidden_in_settings_repr() -> None:
    settings = Settings(api_key=API_KEY, admin_token=ADMIN_TOKEN)

    assert API_KEY not in repr(settings)
    assert ADMIN_TOKEN not in repr(settings)
    assert ADMIN_TOKEN not in settings.model_dump_json()


def test_admin_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_ADMIN_TOKEN", ADMIN_TOKEN)

    token = Settings().admin_token

    assert token is not None
    assert token.get_secret_value() == ADMIN_TOKEN


def test_empty_admin_token_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCL_ADMIN_TOKEN", "")

    assert Settings().admin_token is None


# CORS


@pytest.fixture(scope="module")
def cors_client(bundled_corpus_dir: Path, bundled_index_dir: Path, bundled_service: RuleService) -> Iterator[httpx.Client]:
    settings = Settings(corpus_dir=bundled_corpus_dir, index_dir=bundled_index_dir, cors_origins=[ALLOWED_ORIGIN])
    live = LiveServer(create_app(settings, bundled_service)).start()
    with live.client() as http:
        yield http
    live.stop()


def _preflight(http: httpx.Client, origin: str) -> httpx.Response:
    headers = {"Origin": origin, "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "authorization, content-type"}
    return http.options("/v1/rules/search", headers=headers)


def test_cors_off_by_default(client: httpx.Client) -> None:
    response = client.post("/v1/rules/search", json=SEARCH_BODY, headers={"Origin": ALLOWED_ORIGIN})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_off_preflight(client: httpx.Client) -> None:
    assert "access-control-allow-origin" not in _preflight(client, ALLOWED_ORIGIN).headers


def test_cors_allowed_origin(cors_client: httpx.Client) -> None:
    response = cors_client.post("/v1/rules/search", json=SEARCH_BODY, headers={"Origin": ALLOWED_ORIGIN})

    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "X-Request-ID" in response.headers["access-control-expose-headers"]


def test_cors_other_origin(cors_client: httpx.Client) -> None:
    response = cors_client.post("/v1/rules/search", json=SEARCH_BODY, headers={"Origin": OTHER_ORIGIN})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_preflight_allowed(cors_client: httpx.Client) -> None:
    response = _preflight(cors_client, ALLOWED_ORIGIN)

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cors_preflight_other_origin(cors_client: httpx.Client) -> None:
    response = _preflight(cors_client, OTHER_ORIGIN)

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_cors_on_error_responses(cors_client: httpx.Client) -> None:
    response = cors_client.post("/v1/rules/search", json={"query": ""}, headers={"Origin": ALLOWED_ORIGIN})

    assert response.status_code == 422
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize(("value", "expected"), [
    ("https://a.example, http://localhost:3000", ["https://a.example", "http://localhost:3000"]),
    ('["https://a.example"]', ["https://a.example"]),
    ("*", ["*"]),
])
def test_cors_origins_from_environment(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("ASCL_CORS_ORIGINS", value)

    assert Settings().cors_origins == expected


@pytest.mark.parametrize("origin", ["https://a.example/", "a.example", "https://a.example/path", "ftp://a.example"])
def test_cors_origin_invalid(origin: str) -> None:
    with pytest.raises(ValidationError, match="invalid CORS origin"):
        Settings(cors_origins=[origin])


# The MCP server over streamable HTTP honours ASCL_API_KEY


def _wait_for_listen(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"ascl mcp exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            return False
        return True

    wait_until(listening, 60, f"ascl mcp to listen on {url}")


@pytest.fixture(scope="module")
def mcp_guarded(guarded: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`ascl mcp` over streamable HTTP with ASCL_API_KEY set, backed by the guarded rule service."""
    tmp_path = tmp_path_factory.mktemp("mcp-guarded")
    port = free_port()
    log = tmp_path / "mcp.log"
    args = [str(ASCL_BIN), "mcp", "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port),
            "--rules-url", guarded.base_url, "--log-level", "DEBUG"]
    env = cli_env(tmp_path) | {"ASCL_API_KEY": API_KEY}
    with log.open("wb") as output:
        process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_for_listen(process, url, log)
        yield url, log
    finally:
        process.terminate()
        process.wait(timeout=30)


INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "ascl-tests", "version": "1"}},
}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("headers", [{}, _bearer(API_KEY + "x"), _bearer(ADMIN_TOKEN), {"Authorization": API_KEY}])
def test_mcp_http_rejects_without_key(mcp_guarded: tuple[str, Path], headers: dict[str, str]) -> None:
    response = httpx.post(mcp_guarded[0], json=INITIALIZE, headers=MCP_ACCEPT | headers, timeout=30)

    assert response.status_code == 401
    assert "ASCL_API_KEY" in response.json()["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_mcp_http_accepts_key(mcp_guarded: tuple[str, Path]) -> None:
    response = httpx.post(mcp_guarded[0], json=INITIALIZE, headers=MCP_ACCEPT | _bearer(API_KEY), timeout=30)

    assert response.status_code == 200


def _sdk_session(url: str, headers: dict[str, str], statuses: list[int]) -> tuple[list[types.Tool], types.CallToolResult]:
    """List tools and call the rule tool with the mcp SDK's client; `statuses` receives every HTTP status it got."""
    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    async def run() -> tuple[list[types.Tool], types.CallToolResult]:
        http = httpx2.AsyncClient(headers=headers, timeout=60, event_hooks={"response": [record]})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool(TOOL_NAME, {"query": SEARCH_BODY["query"], "top_k": 2})
            return tools, result

    return asyncio.run(run())


def test_mcp_sdk_client_with_key(mcp_guarded: tuple[str, Path]) -> None:
    statuses: list[int] = []

    tools, result = _sdk_session(mcp_guarded[0], _bearer(API_KEY), statuses)
    structured: dict[str, Any] = result.structured_content or {}

    assert [tool.name for tool in tools] == [TOOL_NAME]
    assert result.is_error is False
    assert structured["rules"][0]["id"] == "help.violent_idioms"
    assert 401 not in statuses


def test_mcp_sdk_client_without_key(mcp_guarded: tuple[str, Path]) -> None:
    statuses: list[int] = []

    with pytest.raises(Exception, match="TaskGroup"):
        _sdk_session(mcp_guarded[0], {}, statuses)

    assert statuses
    assert set(statuses) == {401}


def test_mcp_log_has_no_key(mcp_guarded: tuple[str, Path]) -> None:
    httpx.post(mcp_guarded[0], json=INITIALIZE, headers=MCP_ACCEPT | _bearer(API_KEY + "-wrong"), timeout=30)
    _sdk_session(mcp_guarded[0], _bearer(API_KEY), [])

    log = mcp_guarded[1].read_text(encoding="utf-8", errors="replace")

    assert "MCP request rejected" in log
    assert API_KEY not in log
