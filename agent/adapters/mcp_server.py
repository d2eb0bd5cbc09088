"""The rule tool as an MCP server, built on the official `mcp` SDK (2.x `MCPServer`).

The tool's `tools/list` entry is `rule_service.tool.mcp_tool`: the input schema
comes from `RuleToolInput` and the output schema from `RuleToolOutput`. A call
returns the rule text as one text block and the `RuleToolOutput` as structured
content. The raw arguments go to the backend, which checks them like the HTTP
tool route does, so invalid arguments return `isError` with the same message.
"""

import hmac
import json
import logging
import os
from importlib import metadata
from typing import Any, Literal

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.backend import RuleBackend
from agent.clients import API_KEY_ENV, RuleServiceError
from rule_service.tool import TOOL_NAME, RuleToolOutput, mcp_tool

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "streamable-http"]
SERVER_NAME = "ascl-rules"
INSTRUCTIONS = (
    f"Call {TOOL_NAME} before answering a request that touches a sensitive area; "
    "the returned rules say what help is fine, what is not, and what to offer instead."
)


class RuleToolServer(MCPServer):
    """An `MCPServer` that serves the rule tool from a `RuleBackend`.

    It overrides `list_tools` and `call_tool` instead of registering a Python
    function, because the SDK would derive the schema from the function's
    signature and validate arguments itself, with other messages than the rule
    service's.
    """

    def __init__(self, backend: RuleBackend, *, name: str = SERVER_NAME, max_top_k: int | None = None) -> None:
        super().__init__(name=name, instructions=INSTRUCTIONS, version=_package_version())
        self.backend = backend
        self.rule_tool = types.Tool.model_validate(mcp_tool(max_top_k))

    async def list_tools(self) -> list[types.Tool]:
        return [*await super().list_tools(), self.rule_tool]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None,
    ) -> types.CallToolResult | types.InputRequiredResult:
        if name != TOOL_NAME:
            return await super().call_tool(name, arguments, context)
        try:
            output = await self.backend.acall_tool(arguments)
        except RuleServiceError as exc:
            logger.warning("rule tool call failed: rule service request %s: %s", exc.request_id, exc.message)
            output = RuleToolOutput(content=f"Error: the rule service failed: {exc.message}", rules=[], is_error=True)
        return call_tool_result(output)


def call_tool_result(output: RuleToolOutput) -> types.CallToolResult:
    """Return the MCP result of one rule tool call: the rule text, plus the output as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=output.content)],
        structured_content=output.model_dump(mode="json"),
        is_error=output.is_error,
    )


def build_mcp_server(backend: RuleBackend, *, name: str = SERVER_NAME, max_top_k: int | None = None) -> MCPServer:
    """Build an MCP server exposing the rule tool; `max_top_k` adds the service's limit to the input schema."""
    return RuleToolServer(backend, name=name, max_top_k=max_top_k)


def run_mcp(
    backend: RuleBackend,
    transport: Transport = "stdio",
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    max_top_k: int | None = None,
    api_key: str | None = None,
) -> None:
    """Serve the rule tool over stdio, or over streamable HTTP at http://host:port/mcp, until stopped.

    Over stdio, stdout carries the protocol, so logs must go to stderr. Over
    HTTP, `api_key` (default: ASCL_API_KEY) is required as a bearer token on
    every request, as the rule service requires it.
    """
    server = build_mcp_server(backend, max_top_k=max_top_k)
    if transport == "stdio":
        logger.info("MCP server %s starting on stdio", server.name)
        server.run("stdio")
    elif transport == "streamable-http":
        import uvicorn

        key = api_key or os.environ.get(API_KEY_ENV) or None
        app = server.streamable_http_app(host=host)
        if key:
            app = BearerKeyMiddleware(app, key)
        logger.info("MCP server %s starting on http://%s:%d/mcp, API key %s",
                    server.name, host, port, "required" if key else "not required")
        uvicorn.run(app, host=host, port=port, log_config=None)
    else:
        raise ValueError(f"transport must be 'stdio' or 'streamable-http' (got {transport!r})")
    logger.info("MCP server %s stopped", server.name)


class BearerKeyMiddleware:
    """ASGI middleware that returns 401 to every HTTP request without `Authorization: Bearer <key>`."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        logger.info("MCP request rejected: missing or wrong API key")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"message": f"missing or invalid API key; send it as 'Authorization: Bearer <{API_KEY_ENV}>'"})
        await send({
            "type": "http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
        })
        await send({"type": "http.response.body", "body": body.encode()})

    def _authorized(self, scope: Scope) -> bool:
        header = next((value for name, value in scope.get("headers", []) if name.lower() == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest takes time independent of where the values differ.
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)


def _package_version() -> str:
    try:
        return metadata.version("ascl")
    except metadata.PackageNotFoundError:
        return "0+unknown"
