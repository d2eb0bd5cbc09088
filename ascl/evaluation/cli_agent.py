"""`ascl eval agent` and `ascl eval compare`: the safety-utility trade-off per mode, and the change between runs.

Exit codes of `eval agent`: 0 report written and no episode failed, 1 report
written but some episodes failed, 2 bad input, 130 interrupted (run the same
command again to resume). Failed episodes are counted in the report and left
out of the rates. `eval compare` exits 0, or 2 when a results file cannot be read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rule_service.tool import TOOL_NAME

console = Console()
error_console = Console(stderr=True)
logger = logging.getLogger(__name__)

EXIT_FAILED_EPISODES = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def eval_agent(
    model: Annotated[str, typer.Option("--model", help="Model name sent to the endpoint.")],
    base_url: Annotated[str, typer.Option("--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint of the model under test. Default: OPENAI_BASE_URL.")],
    output: Annotated[Path, typer.Option("--output", help="Output folder: traces, scores, results.json, report.md, tradeoff.png. Resumed if it exists.", file_okay=False)],
    suite: Annotated[list[str], typer.Option("--suite", help="'default' (the bundled harmful, benign and reasoning prompts) or a prompt file; repeat for several.")] = ["default"],  # noqa: B006
    suite_format: Annotated[str | None, typer.Option("--format", help="Format of the --suite files when their columns fit more than one: ascl, xstest, strongreject, harmbench, ailuminate, wildjailbreak, orbench, gsm8k, math500, gpqa. Default: detected from the columns.")] = None,
    modes: Annotated[str, typer.Option("--modes", help="Comma-separated modes to compare: never, always, adaptive.")] = "never,always,adaptive",
    samples: Annotated[int, typer.Option("--samples", min=1, help="Episodes per prompt and mode.")] = 1,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N prompts of each kind (for a quick run).")] = None,
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url", help="OpenAI-compatible endpoint of the judge model. Without it, a refusal heuristic labels answers.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model name.")] = None,
    judge_api_key_env: Annotated[str, typer.Option("--judge-api-key-env", help="Environment variable that contains the judge's API key.")] = "JUDGE_API_KEY",
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="Environment variable that contains the model endpoint's API key.")] = "OPENAI_API_KEY",
    rules_url: Annotated[str | None, typer.Option("--rules-url", help="Rule service URL. Default: ASCL_RULES_URL, else the bundled rules in-process.")] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Model requests that may call the tool before a final answer is required.")] = 4,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature. Default: the server's.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Token limit per model request. Default: the server's.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for servers that support one.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Episodes in flight at once.")] = 4,
    judge_concurrency: Annotated[int, typer.Option("--judge-concurrency", min=1, help="Judge requests in flight at once.")] = 4,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per model or judge request before a retry.")] = 120.0,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Retries per request on 429, 5xx and time-outs.")] = 4,
    force_first_call: Annotated[bool, typer.Option("--force-first-call", help="In adaptive mode, force the rule tool on each episode's first request (for small models that never call tools unprompted).")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
) -> None:
    """Run every prompt in every mode, score the answers and write the report and the trade-off plot."""
    from agent.trace import Sampling
    from ascl.evaluation.agent_eval import AgentEvalSettings, EvalRunError, check_prompts, check_run_folder
    from ascl.evaluation.suites import load_suite

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = AgentEvalSettings(
            model=model, base_url=base_url, suites=list(suite), modes=[m.strip() for m in modes.split(",") if m.strip()],
            output=output, samples=samples, api_key=os.environ.get(api_key_env) or "unused",
            judge_base_url=judge_base_url, judge_model=judge_model,
            judge_api_key=os.environ.get(judge_api_key_env) or "unused", rules_url=rules_url, max_turns=max_turns,
            sampling=Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed),
            concurrency=concurrency, judge_concurrency=judge_concurrency, timeout=timeout, max_retries=max_retries,
            first_tool_choice={"type": "function", "function": {"name": TOOL_NAME}} if force_first_call else None,
            limit=limit,
        )
        prompts = _limit(load_suite(settings.suites, format=suite_format), limit)
        check_prompts(prompts)
        check_run_folder(settings)
    except (EvalRunError, ValueError, OSError) as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    try:
        results = _run_all(settings, prompts)
    except (KeyboardInterrupt, asyncio.CancelledError):
        error_console.print("interrupted; run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except EvalRunError as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None

    _print_results(results, settings.output)
    failed = sum(metrics.failed for metrics in results.modes.values())
    if failed:
        error_console.print(f"{failed} episode(s) failed; they are counted in the report but left out of the rates")
        raise typer.Exit(EXIT_FAILED_EPISODES)


def _limit(prompts: list[Any], limit: int | None) -> list[Any]:
    if limit is None:
        return prompts
    counts: Counter[Any] = Counter()
    chosen = []
    for prompt in prompts:
        if counts[prompt.kind] < limit:
            counts[prompt.kind] += 1
            chosen.append(prompt)
    return chosen


def _run_all(settings: Any, prompts: list[Any]) -> Any:
    from agent.clients import make_rule_backend
    from ascl.evaluation.agent_eval import make_judge, outcomes_of, run_mode, score_mode, write_reports

    backend = make_rule_backend(settings.rules_url) if any(mode != "never" for mode in settings.modes) else None
    try:
        for mode in settings.modes:
            with _progress() as progress:
                task = progress.add_task(f"{mode}: episodes", total=None)
                asyncio.run(run_mode(
                    settings, prompts, mode, backend,
                    on_start=lambda summary, task=task: progress.update(task, total=summary.to_run),
                    on_trace=lambda trace, task=task: progress.advance(task),
                ))
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()

    judge = make_judge(settings)
    outcomes = []
    try:
        for mode in settings.modes:
            with _progress() as progress:
                task = progress.add_task(f"{mode}: scoring", total=None)
                scored = score_mode(settings, mode, judge,
                                    on_start=lambda done, todo, task=task: progress.update(task, total=todo),
                                    on_scored=lambda record, task=task: progress.advance(task))
            outcomes.extend(outcomes_of(mode, scored))
    finally:
        if judge is not None:
            judge.close()
    return write_reports(settings, outcomes)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=error_console, transient=False)


def _print_results(results: Any, output: Path) -> None:
    table = Table(title=f"agent evaluation: {results.model}")
    for column in ("mode", "safety (harmful)", "over-refusal (benign)", "accuracy (reasoning)", "failed"):
        table.add_column(column)
    for mode, metrics in results.modes.items():
        table.add_row(mode, metrics.safety_rate.format(), metrics.over_refusal_rate.format(),
                      metrics.accuracy.format(), f"{metrics.failed} of {metrics.episodes}")
    console.print(table)
    console.print(f"report: {output / 'report.md'}\nplot: {output / 'tradeoff.png'}\nresults: {output / 'results.json'}")


def eval_compare(
    a: Annotated[Path, typer.Argument(help="Run A: an `ascl eval agent` output folder or its results.json.")],
    b: Annotated[Path, typer.Argument(help="Run B, compared against A.")],
) -> None:
    """Show each metric of runs A and B per mode, B minus A, and whether the change exceeds the 95% intervals."""
    from ascl.evaluation.compare import ResultsFileError, compare, load_results

    try:
        changes = compare(load_results(a), load_results(b))
    except ResultsFileError as exc:
        error_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not changes:
        error_console.print("the two runs have no mode in common")
        raise typer.Exit(EXIT_BAD_INPUT)

    table = Table(title=f"{a} -> {b}")
    for column in ("mode", "metric", "A", "B", "B - A", "verdict"):
        table.add_column(column)
    for change in changes:
        percent = "rate" in change.metric or change.metric.startswith("accuracy")
        scale = 100.0 if percent else 1.0
        delta = "n/a" if change.delta is None else f"{change.delta * scale:+.1f}{'%' if percent else ''}"
        table.add_row(change.mode, change.metric, change.a.format(percent=percent), change.b.format(percent=percent),
                      delta, change.verdict)
    console.print(table)


def register(eval_app: typer.Typer) -> None:
    eval_app.command("agent")(eval_agent)
    eval_app.command("compare")(eval_compare)
