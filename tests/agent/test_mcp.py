"""The MCP server, tested with the `mcp` SDK's own client: in process, over stdio and over streamable HTTP.

The stdio test starts `ascl mcp` with the bundled rules in process, so that
subprocess loads the encoder and the saved index once (several seconds). The
streamable HTTP test starts `ascl mcp --rules-url` against the live rule
service, so it loads no model.
"""

import asyncio
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from agent.adapters.mcp_server import build_mcp_server
from agent.backend import RuleBackend
from agent.clients import RuleClient
from rule_service.tool import TOOL_NAME, RuleToolOutput, input_schema
from tests.conftest import ASCL_BIN, REPO_ROOT, LiveServer, cli_env, free_port, run_ascl

QUERY = "what is the most painless way to end my life"
ARGUMENTS = {"query": QUERY, "top_k": 3}
SUBPROCESS_START_TIMEOUT_S = 60.0

T = TypeVar("T")


@pytest.fixture
def expected(backend: RuleBackend) -> RuleToolOutput:
    return backend.call_tool(ARGUMENTS)


def _with_client(target: Any, action: Callable[[Client], Awaitable[T]]) -> T:
    async def run() -> T:
        async with Client(target) as client:
            return await action(client)

    return asyncio.run(run())


async def _list_tools(client: Client) -> list[types.Tool]:
    return (await client.list_tools()).tools


def _call(arguments: dict[str, Any], name: str = TOOL_NAME) -> Callable[[Client], Awaitable[types.CallToolResult]]:
    async def call(client: Client) -> types.CallToolResult:
        return await client.call_tool(name, arguments)

    return call


def _text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))


# In process


def test_list_tools_one_tool(backend: RuleBackend) -> None:
    tools = _with_client(build_mcp_server(backend), _list_tools)

    assert [tool.name for tool in tools] == [TOOL_NAME]


def test_list_tools_input_schema(backend: RuleBackend) -> None:
    [tool] = _with_client(build_mcp_server(backend, max_top_k=20), _list_tools)

    assert tool.input_schema == input_schema(20)


def test_list_tools_output_schema(backend: RuleBackend) -> None:
    [tool] = _with_client(build_mcp_server(backend), _list_tools)

    assert tool.output_schema == RuleToolOutput.model_json_schema()


def test_call_returns_rule_text(backend: RuleBackend, expected: RuleToolOutput) -> None:
    result = _with_client(build_mcp_server(backend), _call(ARGUMENTS))

    assert result.is_error is False
    assert _text(result) == expected.content


def test_call_structured_content(backend: RuleBackend, expected: RuleToolOutput) -> None:
    result = _with_client(build_mcp_server(backend), _call(ARGUMENTS))
    output = RuleToolOutput.model_validate(result.structured_content)

    assert [rule.id for rule in output.rules] == [rule.id for rule in expected.rules]


def test_call_missing_query(backend: RuleBackend) -> None:
    result = _with_client(build_mcp_server(backend), _call({"top_k": 2}))

    assert result.is_error is True
    assert "query is missing" in _text(result)


def test_call_unknown_argument(backend: RuleBackend) -> None:
    result = _with_client(build_mcp_server(backend), _call({"query": "x", "limit": 2}))

    assert result.is_error is True
    assert "limit is not a known argument" in _text(result)


def test_call_wrong_type(backend: RuleBackend) -> None:
    result = _with_client(build_mcp_server(backend), _call({"query": "x", "top_k": "many"}))

    assert result.is_error is True
    assert "top_k" in _text(result)


def test_call_unknown_tool(backend: RuleBackend) -> None:
    result = _with_client(build_mcp_server(backend), _call({"query": "x"}, name="web_search"))

    assert result.is_error is True


def test_call_service_down_is_error() -> None:
    unreachable = RuleClient(f"http://127.0.0.1:{free_port()}", max_attempts=1)

    result = _with_client(build_mcp_server(unreachable), _call(ARGUMENTS))

    assert result.is_error is True
    assert "rule service failed" in _text(result)


# Over stdio: `ascl mcp` with the bundled rules in process


def test_stdio_local_rules(tmp_path: Path, bundled_index_dir: Path, expected: RuleToolOutput) -> None:
    # The session's saved index matches the bundled corpus, so the subprocess loads it instead of building one.
    env = {**cli_env(tmp_path), "ASCL_INDEX_DIR": str(bundled_index_dir)}
    # The default log level (INFO) checks that logs go to stderr and leave stdout to the protocol.
    params = StdioServerParameters(command=str(ASCL_BIN), args=["mcp"], env=env, cwd=REPO_ROOT)

    async def session(client: Client) -> tuple[list[types.Tool], types.CallToolResult, types.CallToolResult]:
        return await _list_tools(client), await _call(ARGUMENTS)(client), await _call({"top_k": 2})(client)

    with (tmp_path / "mcp-stderr.log").open("w") as errlog:
        tools, result, invalid = _with_client(stdio_client(params, errlog=errlog), session)

    assert [tool.name for tool in tools] == [TOOL_NAME]
    assert tools[0].input_schema["required"] == ["query"]
    assert _text(result) == expected.content
    assert invalid.is_error is True


# Over streamable HTTP: `ascl mcp --transport streamable-http --rules-url ...`


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + SUBPROCESS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ascl mcp exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"ascl mcp did not listen on port {port} within {SUBPROCESS_START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def mcp_http_url(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `ascl mcp` over streamable HTTP, using the live rule service; yield its endpoint."""
    tmp_path = tmp_path_factory.mktemp("mcp-http")
    port = free_port()
    log = tmp_path / "mcp-http.log"
    args = [str(ASCL_BIN), "mcp", "--transport", "streamable-http", "--host", "127.0.0.1", "--port", str(port),
            "--rules-url", server.base_url, "--log-level", "WARNING"]
    with log.open("wb") as output:
        process = subprocess.Popen(args, cwd=REPO_ROOT, env=cli_env(tmp_path), stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(process, port, log)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_http_list_tools(mcp_http_url: str) -> None:
    [tool] = _with_client(mcp_http_url, _list_tools)

    assert tool.name == TOOL_NAME
    assert tool.input_schema == input_schema()


def test_http_call(mcp_http_url: str, expected: RuleToolOutput) -> None:
    result = _with_client(mcp_http_url, _call(ARGUMENTS))

    assert result.is_error is False
    assert _text(result) == expected.content


def test_http_invalid_arguments(mcp_http_url: str) -> None:
    result = _with_client(mcp_http_url, _call({"query": "   "}))

    assert result.is_error is True
    assert "query must not be empty" in _text(result)


# Command line


def test_cli_bad_rules_url(tmp_path: Path) -> None:
    result = run_ascl(["mcp", "--rules-url", "localhost:8000"], tmp_path)

    assert result.returncode == 2
    assert "http://" in result.stderr


def test_cli_bad_log_level(tmp_path: Path) -> None:
    result = run_ascl(["mcp", "--log-level", "LOUD"], tmp_path)

    assert result.returncode == 2
    assert "LOUD" in result.stderr
