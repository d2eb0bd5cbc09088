"""`ascl eval agent`: run prompt suites through the agent loop per mode, score them and report.

The output folder contains everything a run needs to resume:

    run.json                  the settings; a second run with other settings is rejected
    traces/<mode>.jsonl       agent traces (appended, resumed by the batch runner)
    scored/<mode>.jsonl       the traces with rewards, and scored/<mode>.details.jsonl
    results.json, report.md, tradeoff.png

Each step skips work already on disk, so running the same command again after
an interruption continues where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.batch import BatchRun, PromptRecord, run_batch
from agent.episode import EpisodeConfig, make_async_client
from agent.trace import Sampling, Trace, read_traces
from ascl.evaluation.report import plot_tradeoff, render_markdown
from ascl.evaluation.suites import wrapper_style
from ascl.evaluation.summary import EvalResults, Outcome, summarize
from rule_service.index import write_atomic
from trainer.rewards.judge import Judge
from trainer.rewards.score_file import ScorePaths, score_file
from trainer.rewards.scoring import ScoreRecord

logger = logging.getLogger(__name__)

MODES = ("never", "always", "adaptive")


class EvalRunError(ValueError):
    """Error for settings or an output folder that an evaluation run cannot use."""


@dataclass
class AgentEvalSettings:
    """Settings of an evaluation run; the fields in `fingerprint` must match when a run resumes."""

    model: str
    base_url: str
    suites: list[str]
    modes: list[str]
    output: Path
    samples: int = 1
    api_key: str = "unused"
    judge_base_url: str | None = None
    judge_model: str | None = None
    judge_api_key: str = "unused"
    rules_url: str | None = None
    max_turns: int = 4
    sampling: Sampling = field(default_factory=Sampling)
    system_prompt: str | None = None
    concurrency: int = 4
    judge_concurrency: int = 4
    timeout: float = 120.0
    max_retries: int = 4
    first_tool_choice: dict[str, Any] | None = None
    limit: int | None = None  # prompts of each kind, for a quick run

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.modes if mode not in MODES]
        if not self.modes or unknown:
            raise EvalRunError(f"--modes {','.join(self.modes)!r}: use a comma-separated list of {', '.join(MODES)}")
        if len(set(self.modes)) != len(self.modes):
            raise EvalRunError(f"--modes {','.join(self.modes)!r}: each mode may appear once")
        if self.samples < 1:
            raise EvalRunError(f"--samples must be at least 1, got {self.samples}")
        if (self.judge_base_url is None) != (self.judge_model is None):
            raise EvalRunError("give both --judge-base-url and --judge-model, or neither (the refusal heuristic)")

    def fingerprint(self) -> dict[str, Any]:
        return {
            "model": self.model, "base_url": self.base_url, "suites": self.suites, "samples": self.samples,
            "judge_model": self.judge_model, "max_turns": self.max_turns, "system_prompt": self.system_prompt,
            "sampling": self.sampling.model_dump(), "first_tool_choice": self.first_tool_choice,
            "limit": self.limit,
        }


def check_run_folder(settings: AgentEvalSettings) -> None:
    """Create the output folder, or check that the run recorded there used the same settings."""
    record = settings.output / "run.json"
    wanted = settings.fingerprint()
    if record.exists():
        found = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(key for key in wanted if found.get(key) != wanted[key])
        if changed:
            raise EvalRunError(f"{settings.output} contains a run with other settings ({', '.join(changed)}); "
                               "use another --output or delete the folder")
        return
    settings.output.mkdir(parents=True, exist_ok=True)
    write_atomic(record, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def check_prompts(prompts: Sequence[PromptRecord]) -> None:
    """Reject prompts without a kind: the metrics are defined per kind."""
    missing = [prompt.id for prompt in prompts if prompt.kind is None]
    if missing:
        raise EvalRunError(f"{len(missing)} prompt(s) have no 'kind' (first: {missing[0]!r}); "
                           "label each as harmful, benign or reasoning")


async def run_mode(settings: AgentEvalSettings, prompts: list[PromptRecord], mode: str, backend: Any,
                   on_start: Callable | None = None, on_trace: Callable | None = None) -> Path:
    """Run (or finish) the episodes of one mode; return the trace file."""
    config = EpisodeConfig(model=settings.model, mode=mode, max_turns=settings.max_turns,
                           system_prompt=settings.system_prompt, sampling=settings.sampling,
                           first_tool_choice=settings.first_tool_choice if mode == "adaptive" else None)
    client = make_async_client(settings.base_url, api_key=settings.api_key, timeout=settings.timeout,
                               max_retries=settings.max_retries)
    output = settings.output / "traces" / f"{mode}.jsonl"
    run = BatchRun(client=client, backend=backend if mode != "never" else None, config=config, prompts=prompts,
                   output=output, samples_per_prompt=settings.samples, concurrency=settings.concurrency)
    try:
        summary = await run_batch(run, on_start=on_start, on_trace=on_trace)
    finally:
        await client.close()
    if summary.interrupted:
        raise asyncio.CancelledError
    logger.info("mode %s: %d episodes ran, %d failed, %d already done", mode, summary.ran, summary.failed,
                summary.already_done)
    return output


def score_mode(settings: AgentEvalSettings, mode: str, judge: Judge | None,
               on_start: Callable | None = None, on_scored: Callable | None = None) -> Path:
    """Score the traces of one mode unless a complete scored file exists; return the scored file."""
    traces_path = settings.output / "traces" / f"{mode}.jsonl"
    paths = ScorePaths.for_output(settings.output / "scored" / f"{mode}.jsonl")
    if paths.output.exists() and paths.details.exists():
        wanted = {trace.trace_id for trace in read_traces(traces_path)}
        scored = {trace.trace_id for trace in read_traces(paths.output)}
        if wanted == scored:
            return paths.output
        paths.output.unlink()  # the traces grew since (an earlier run was cut short): score again
    score_file(traces_path, paths, judge=judge, concurrency=settings.judge_concurrency,
               on_start=on_start, on_scored=on_scored)
    return paths.output


def outcomes_of(mode: str, scored_path: Path) -> list[Outcome]:
    """Turn the scored traces of one mode, with their detail records, into outcomes."""
    details = ScorePaths.for_output(scored_path).details
    records = {}
    for line in details.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = ScoreRecord.model_validate_json(line)
            records[record.trace_id] = record
    return [outcome_of(mode, trace, records[trace.trace_id]) for trace in read_traces(scored_path)]


def outcome_of(mode: str, trace: Trace, record: ScoreRecord) -> Outcome:
    """Read one episode's verdicts from its score record."""
    kind = trace.labels.kind
    if kind is None:
        raise EvalRunError(f"trace {trace.trace_id}: prompt {trace.prompt_id!r} has no kind")
    outcome = Outcome(
        mode=mode, kind=kind, category=trace.labels.category or "uncategorized", prompt_id=trace.prompt_id,
        style=wrapper_style(trace.prompt_id) if kind == "harmful" else None,
        sample_index=trace.sample_index, failed=record.failed, tool_called=trace.num_tool_calls > 0,
        completion_tokens=trace.usage.completion_tokens, latency_ms=trace.duration_ms,
    )
    if record.failed:
        return outcome
    verdict = record.results.get("safety") or record.results.get("helpfulness")
    if kind in ("harmful", "benign") and verdict is not None:
        outcome.safe = verdict.parts.get("safe") == 1.0
        outcome.refusal = verdict.parts.get("refusal") == 1.0
        outcome.judged_by = str(verdict.details.get("source", "judge"))
    correctness = record.results.get("correctness")
    if kind == "reasoning":
        outcome.judged_by = "rule"
        if correctness is None:
            raise EvalRunError(f"trace {trace.trace_id}: reasoning prompt {trace.prompt_id!r} has no "
                               f"correctness score ({record.skipped.get('correctness', 'no ground_truth')})")
        outcome.correct = correctness.score == 1.0
    return outcome


def write_reports(settings: AgentEvalSettings, outcomes: list[Outcome]) -> EvalResults:
    """Write results.json, report.md and tradeoff.png atomically; return the results."""
    results = EvalResults(
        created_at=datetime.now(timezone.utc), model=settings.model, base_url=settings.base_url,
        judge_model=settings.judge_model, suites=settings.suites, samples=settings.samples,
        modes=summarize(outcomes, settings.modes),
    )
    payload = results.model_dump_json(by_alias=True, indent=2) + "\n"
    write_atomic(settings.output / "results.json", payload.encode("utf-8"))
    write_atomic(settings.output / "report.md", render_markdown(results).encode("utf-8"))
    plot_tradeoff(results, settings.output / "tradeoff.png")
    logger.info("wrote results.json, report.md and tradeoff.png to %s", settings.output)
    return results


def make_judge(settings: AgentEvalSettings) -> Judge | None:
    """Return the judge of the settings, or None to use the refusal heuristic."""
    if settings.judge_base_url is None or settings.judge_model is None:
        return None
    return Judge(settings.judge_base_url, settings.judge_model, api_key=settings.judge_api_key,
                 cache=settings.output / "judge-cache.jsonl", timeout=settings.timeout,
                 max_retries=settings.max_retries)


__all__ = ["MODES", "AgentEvalSettings", "EvalRunError", "check_prompts", "check_run_folder", "make_judge",
           "outcome_of", "outcomes_of", "run_mode", "score_mode", "write_reports"]
