"""The agent package's commands: `ascl mcp` and `ascl agent run`.

Exit codes: 0 success, 2 usage error. When the bundled rules are loaded in
process, a failure exits with the rule service's codes: 3 invalid rule set,
4 stale index, 5 encoder failed to load.
"""

import logging
import os
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

from agent.backend import LocalRuleClient, RuleBackend
from agent.clients import RULES_URL_ENV, RuleClient
from rule_service.cli import configure_logging, load_service_or_exit, make_settings

logger = logging.getLogger(__name__)

error_console = Console(stderr=True)

RulesUrlOption = Annotated[
    str | None,
    typer.Option("--rules-url", help="Base URL of a running rule service. Default: ASCL_RULES_URL, else the bundled rules in-process."),
]
LogLevelOption = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR. Logs go to stderr.")]


class McpTransport(str, Enum):
    """MCP transport: stdio for a client that starts the server, streamable HTTP for one that connects."""

    stdio = "stdio"
    streamable_http = "streamable-http"


def register(app: typer.Typer) -> None:
    """Add the agent package's commands to the `ascl` command: `ascl mcp` and `ascl agent run`."""
    from agent.cli_run import register_run

    app.command("mcp")(mcp)
    agent_app = typer.Typer(help="Run the consult-then-reason agent loop.", no_args_is_help=True)
    register_run(agent_app)
    app.add_typer(agent_app, name="agent")


def backend_or_exit(rules_url: str | None) -> RuleBackend:
    """Return the rule backend for `--rules-url`, exiting with a message when it cannot be built.

    Without a URL (here or in ASCL_RULES_URL) the bundled rules are loaded in
    process with settings from ASCL_* variables, which takes a few seconds.
    """
    url = rules_url or os.environ.get(RULES_URL_ENV)
    if url:
        try:
            return RuleClient(url)
        except ValueError as exc:
            error_console.print(f"[red]invalid --rules-url:[/red] {exc}")
            raise typer.Exit(2) from None
    return LocalRuleClient(load_service_or_exit(make_settings()))


def mcp(
    rules_url: RulesUrlOption = None,
    transport: Annotated[McpTransport, typer.Option(help="stdio for a client that starts this command, streamable-http to listen on --host and --port.")] = McpTransport.stdio,
    host: Annotated[str, typer.Option(help="Address to bind with --transport streamable-http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port with --transport streamable-http; the endpoint is /mcp.")] = 8001,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Serve the rule tool to MCP clients (Claude Desktop, IDEs, agent frameworks)."""
    from agent.adapters.mcp_server import run_mcp

    configure_logging(_log_level(log_level))
    backend = backend_or_exit(rules_url)
    # Only the in-process service's top_k limit is known here; a remote service enforces its own.
    max_top_k = backend.service.settings.max_top_k if isinstance(backend, LocalRuleClient) else None
    try:
        run_mcp(backend, transport.value, host, port, max_top_k=max_top_k)
    except KeyboardInterrupt:
        logger.info("MCP server stopped by interrupt")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        error_console.print(f"[red]invalid --log-level {value!r}:[/red] use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        raise typer.Exit(2)
    return level
