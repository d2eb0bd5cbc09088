"""`ascl score`: add rewards to every trace of a file, with a judge model or the heuristic fallback.

Exit codes:
- 0: every trace was scored. Verdicts that fell back to the heuristic are
  counted in the summary and reported on stderr.
- 74: an output file could not be written. The partial files keep what was scored.
- 2: bad input (trace file, reward config, options or partial files).
- 130: interrupted. The traces scored so far are kept; run the same command again to resume.
"""

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from trainer.rewards.config import RewardConfig
    from trainer.rewards.judge import Judge
    from trainer.rewards.score_file import ScorePaths
    from trainer.rewards.summary import ScoreSummary

console = Console()
error_console = Console(stderr=True)
logger = logging.getLogger(__name__)

EXIT_WRITE_FAILED = 74  # EX_IOERR of sysexits.h, as `ascl agent run` and `ascl export` use
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_API_KEY_ENV = "ASCL_JUDGE_API_KEY"


def default_cache_path() -> Path:
    """Return the default verdict cache: `$XDG_CACHE_HOME/ascl/judge-verdicts.jsonl` (else under ~/.cache)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "ascl" / "judge-verdicts.jsonl"


def _fail(message: str) -> typer.Exit:
    # soft_wrap keeps the message on one line however long the paths in it are.
    error_console.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _make_judge(base_url: str | None, model: str | None, api_key_env: str, cache: Path | None, timeout: float,
                max_retries: int) -> "Judge":
    from trainer.rewards.judge import Judge

    if not base_url or not model:
        raise _fail("give --judge-base-url and --judge-model (or ASCL_JUDGE_BASE_URL and ASCL_JUDGE_MODEL), "
                    "or --no-judge to use the heuristic refusal detector")
    try:
        return Judge(base_url, model, api_key=os.environ.get(api_key_env), cache=cache or default_cache_path(),
                     timeout=timeout, max_retries=max_retries)
    except (ValueError, OSError) as exc:
        raise _fail(f"cannot set up the judge: {exc}") from None


def score(
    traces: Annotated[Path, typer.Option("--traces", help="Trace file to score (JSON Lines, as written by `ascl agent run`).", exists=True, dir_okay=False, readable=True)],
    output: Annotated[Path, typer.Option("--output", help="Where to write the scored traces; written whole at the end, replacing any file there.", dir_okay=False)],
    judge_base_url: Annotated[str | None, typer.Option("--judge-base-url", envvar="ASCL_JUDGE_BASE_URL", help="OpenAI-compatible endpoint of the judge model, e.g. http://127.0.0.1:8080/v1.")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", envvar="ASCL_JUDGE_MODEL", help="Judge model name sent to the endpoint.")] = None,
    judge_api_key_env: Annotated[str, typer.Option("--judge-api-key-env", help="Environment variable that contains the judge endpoint's API key.")] = DEFAULT_API_KEY_ENV,
    config: Annotated[Path | None, typer.Option("--config", help="Reward config (YAML, or JSON for .json): weights per prompt kind and penalties. Default: built-in weights.", exists=True, dir_okay=False, readable=True)] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Traces scored at once (judge requests in flight).")] = 8,
    cache: Annotated[Path | None, typer.Option("--cache", help="Verdict cache file (JSON Lines). Default: $XDG_CACHE_HOME/ascl/judge-verdicts.jsonl.", dir_okay=False)] = None,
    details: Annotated[Path | None, typer.Option("--details", help="Where to write each trace's reward parts, judge verdict and its source. Default: OUTPUT's name with .details.jsonl.", dir_okay=False)] = None,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Use the heuristic refusal detector instead of a judge; its verdicts are labelled heuristic.")] = False,
    judge_timeout: Annotated[float, typer.Option("--judge-timeout", min=0.1, help="Seconds per judge request before a retry.")] = 60.0,
    judge_max_retries: Annotated[int, typer.Option("--judge-max-retries", min=0, help="Retries per judge request on 429, 5xx and time-outs.")] = 2,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR. Logs go to stderr.")] = "WARNING",
) -> None:
    """Add rewards to every trace of a file and print a summary by prompt kind."""
    from agent.trace import TraceFileError
    from trainer.rewards.config import RewardConfig
    from trainer.rewards.score_file import ScoreFileError, ScorePaths, score_file

    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}: use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        reward_config = RewardConfig.load(config) if config is not None else RewardConfig()
    except ValueError as exc:
        raise _fail(str(exc)) from None
    judge = None if no_judge else _make_judge(judge_base_url, judge_model, judge_api_key_env, cache, judge_timeout,
                                              judge_max_retries)
    paths = ScorePaths.for_output(output, details)
    try:
        summary = _score_with_progress(traces, paths, reward_config, judge, concurrency, score_file)
    except (TraceFileError, ScoreFileError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        error_console.print(f"[red]cannot write the scores:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(EXIT_WRITE_FAILED) from None
    except KeyboardInterrupt:
        error_console.print(f"interrupted; the traces scored so far are in {paths.partial}. "
                            "Run the same command again to resume")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if judge is not None:
            judge.close()
    _print_report(summary, paths, judge)


def _score_with_progress(traces: Path, paths: "ScorePaths", config: "RewardConfig", judge: "Judge | None",
                         concurrency: int, score_file: Any) -> "ScoreSummary":
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=error_console)
    state: dict[str, Any] = {}

    def on_start(already: int, todo: int) -> None:
        if already:
            error_console.print(f"resuming: {already} traces already scored in {paths.partial}")
        state["task"] = progress.add_task("traces", total=todo)

    def on_scored(_scored: object) -> None:
        progress.update(state["task"], advance=1)

    with progress:
        return score_file(traces, paths, config, judge, concurrency, on_start=on_start, on_scored=on_scored)


def _print_report(summary: "ScoreSummary", paths: "ScorePaths", judge: "Judge | None") -> None:
    from trainer.rewards.summary import summary_table

    console.print(summary_table(summary))
    console.print(f"scored traces: {paths.output}\nreward details: {paths.details}")
    if judge is not None:
        stats = judge.stats
        console.print(f"judge {judge.model}: {stats.requests} requests, {stats.cache_hits} cache hits, "
                      f"{stats.retries} retries after invalid verdicts, {stats.failures} failures")
        fallbacks = summary.heuristic_fallbacks
        if fallbacks:
            error_console.print(f"warning: {fallbacks} verdict(s) came from the heuristic because the judge failed; "
                                f"see judge_error in {paths.details}")


def register(app: typer.Typer) -> None:
    """Add `ascl score` to the `ascl` command."""
    app.command("score")(score)
