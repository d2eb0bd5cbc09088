"""`ascl agent run`: play every prompt of a file G times against a chat endpoint and write the traces.

Exit codes: 0 every episode ran and none failed, 1 some episodes failed, now or in an earlier run (their
traces are in the output with the error), 2 bad input (prompt file, output
file, options), 74 the output could not be written (e.g. the disk is full; the traces already in it are
intact), 130 interrupted (run the same command again to resume).
"""

import asyncio
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from rule_service.tool import TOOL_NAME

console = Console()
error_console = Console(stderr=True)
logger = logging.getLogger(__name__)

EXIT_FAILED_EPISODES = 1
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 74  # EX_IOERR of sysexits.h
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ModeChoice(str, Enum):
    adaptive = "adaptive"
    never = "never"
    always = "always"


class ProtocolChoice(str, Enum):
    chat = "chat"
    text = "text"


def agent_run(
    input: Annotated[Path, typer.Option("--input", help="Prompt file (JSON Lines: id, messages or prompt, kind, ground_truth).", exists=True, dir_okay=False, readable=True)],
    output: Annotated[Path, typer.Option("--output", help="Trace file (JSON Lines); appended to, and resumed if it exists.", dir_okay=False)],
    model: Annotated[str, typer.Option("--model", help="Model name sent to the endpoint.")],
    base_url: Annotated[str, typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1. Default: OPENAI_BASE_URL.")],
    mode: Annotated[ModeChoice, typer.Option("--mode", help="adaptive: the model may call the rule tool; never: no tool; always: rules in the system prompt.")] = ModeChoice.adaptive,
    samples_per_prompt: Annotated[int, typer.Option("--samples-per-prompt", "-G", min=1, help="Episodes per prompt; they share a group_id.")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Episodes in flight at once.")] = 8,
    rules_url: Annotated[str | None, typer.Option("--rules-url", help="Rule service URL. Default: ASCL_RULES_URL, else the bundled rules in-process.")] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Model requests that may call the tool before a final answer is required.")] = 4,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature. Default: the server's.")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling. Default: the server's.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Token limit per model request. Default: the server's.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for servers that support one.")] = None,
    system_prompt: Annotated[str | None, typer.Option("--system-prompt", help="System prompt placed before each conversation's own.")] = None,
    protocol: Annotated[ProtocolChoice, typer.Option(help="chat: chat completions with the tool; text: completions with <search> tags (prompts need 'prompt').")] = ProtocolChoice.chat,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per model request before a retry.")] = 120.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries per model request on 429, 5xx and time-outs.")] = 4,
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable that contains the endpoint's API key.")] = "OPENAI_API_KEY",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Remove failed traces from the output and run those episodes again.")] = False,
    fsync: Annotated[bool, typer.Option("--fsync", help="Force each trace to disk as it is written.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
    force_first_call: Annotated[bool, typer.Option("--force-first-call", help="Send tool_choice naming the rule tool on each episode's first request (adaptive mode), for small models that never call tools unprompted.")] = False,
) -> None:
    """Run the agent loop over a prompt file and append one trace per episode to the output."""
    import os

    from agent.batch import BatchError, BatchRun, load_prompts, run_batch
    from agent.episode import DUMMY_API_KEY, EpisodeConfig, make_async_client
    from agent.trace import Sampling

    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}: use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if not base_url.startswith(("http://", "https://")):
            raise BatchError(f"--base-url {base_url!r} is not an http:// or https:// URL")
        sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        first_tool_choice = {"type": "function", "function": {"name": TOOL_NAME}} if force_first_call else None
        config = EpisodeConfig(model=model, mode=mode.value, max_turns=max_turns, system_prompt=system_prompt,
                               sampling=sampling, first_tool_choice=first_tool_choice)
        prompts = load_prompts(input, protocol.value)
        if protocol is ProtocolChoice.text and mode is ModeChoice.always:
            raise BatchError("--mode always does not work with --protocol text; use adaptive or never")
    except (BatchError, ValueError, OSError) as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    backend = _backend(rules_url) if mode is not ModeChoice.never else None
    api_key = os.environ.get(api_key_env) or DUMMY_API_KEY
    client = make_async_client(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
    run = BatchRun(client=client, backend=backend, config=config, prompts=prompts, output=output,
                   samples_per_prompt=samples_per_prompt, concurrency=concurrency, protocol=protocol.value,
                   retry_failed=retry_failed, fsync=fsync)
    try:
        summary = asyncio.run(_run_with_progress(run, run_batch))
    except BatchError as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as exc:
        if exc.filename is None:  # not a file error but, e.g., an escaped socket error: show its traceback
            raise
        error_console.print(f"[red]{escape(_write_failure(exc, output))}[/red]")
        error_console.print("free some space or choose another --output, then run the same command again to resume")
        raise typer.Exit(EXIT_WRITE_FAILED) from None
    _print_summary(summary, output)
    if summary.interrupted:
        error_console.print("interrupted; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.failed_before:
        error_console.print(f"{summary.failed_before} failed trace(s) from an earlier run are in the output; "
                            "run again with --retry-failed to replace them")
    if summary.failed or summary.failed_before:
        raise typer.Exit(EXIT_FAILED_EPISODES)


def _write_failure(exc: OSError, output: Path) -> str:
    from agent.trace import TraceWriteError

    if isinstance(exc, TraceWriteError):
        return str(exc)
    reason = exc.strerror or str(exc)
    return f"cannot write to {exc.filename or output}: {reason[:1].lower()}{reason[1:]}"


def _backend(rules_url: str | None) -> Any:
    from agent.clients import make_rule_backend

    return make_rule_backend(rules_url)


class RateColumn(ProgressColumn):
    """Episodes per second, or episodes per minute when slower than one a second."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        if not speed:
            return Text("-- ep/s", style="progress.data.speed")
        if speed < 1:
            return Text(f"{speed * 60:.1f} ep/min", style="progress.data.speed")
        return Text(f"{speed:.1f} ep/s", style="progress.data.speed")


async def _run_with_progress(run: Any, run_batch: Any) -> Any:
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=error_console, transient=False,
    )
    state: dict[str, Any] = {}

    def on_start(summary: Any) -> None:
        if summary.already_done:
            error_console.print(f"resuming: {summary.already_done} of {summary.planned} episodes already in the output")
        state["task"] = progress.add_task("episodes", total=summary.to_run, failed=0)

    def on_trace(trace: Any) -> None:
        state["failed"] = state.get("failed", 0) + (trace.finish_reason == "error")
        progress.update(state["task"], advance=1, failed=state["failed"])

    try:
        with progress:
            return await run_batch(run, on_start=on_start, on_trace=on_trace)
    finally:
        await run.client.close()
        close = getattr(run.backend, "close", None)
        if callable(close):
            close()


def _print_summary(summary: Any, output: Path) -> None:
    table = Table(title="agent run", show_header=False)
    rate = summary.tool_call_rate
    rows = [
        ("output", str(output)),
        ("episodes planned", str(summary.planned)),
        ("already in the output", str(summary.already_done)),
        ("ran now", str(summary.ran)),
        ("failed", str(summary.failed)),
        ("failed earlier, kept", str(summary.failed_before)),
        ("tool-call rate", "n/a" if rate is None else f"{rate:.1%}"),
        ("tool calls", str(summary.tool_calls)),
        ("prompt tokens", str(summary.prompt_tokens)),
        ("completion tokens", str(summary.completion_tokens)),
        ("finish reasons", ", ".join(f"{k}={v}" for k, v in sorted(summary.finish_reasons.items())) or "-"),
        ("time", f"{summary.duration_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def register_run(agent_app: typer.Typer) -> None:
    """Add `run` to the `ascl agent` command group."""
    agent_app.command("run")(agent_run)
