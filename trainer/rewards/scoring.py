"""Scoring traces: compute the parts that apply to a trace's kind, combine them, and run many with bounded concurrency.

`score_trace_details` returns the scored trace and a `ScoreRecord` with every
part's score, sub-scores and details (judge verdict, its source, the
extracted answer). `score_trace` and `score_traces` return only the traces,
with `trace.rewards` set to `{"total", "penalty", <part>: score, ...}`.
`iter_scores` yields results in input order. Judge requests run in worker
threads, at most `concurrency` at once. Everything else, math-verify
included, runs in the calling thread, so that math-verify keeps its
signal-based time-outs when that is the main thread.
"""

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pydantic import BaseModel

from agent.trace import Trace
from trainer.rewards.config import KindWeights, RewardConfig
from trainer.rewards.functions import (
    Assessment, RewardResult, RewardUnavailable, assess, correctness_reward, format_reward, has_final_answer,
    helpfulness_reward, malformed_tool_calls, safety_reward,
)
from trainer.rewards.judge import Judge

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8


class ScoreRecord(BaseModel):
    """Scoring record of one trace: its rewards and each part's `RewardResult`, keyed by trace id."""

    trace_id: str
    prompt_id: str
    sample_index: int
    kind: str | None
    failed: bool = False
    rewards: dict[str, float]
    results: dict[str, RewardResult] = {}
    skipped: dict[str, str] = {}


class ScoredTrace(BaseModel):
    """A trace with its rewards set, and the record of how they were computed."""

    trace: Trace
    record: ScoreRecord


def penalty_of(trace: Trace, config: RewardConfig) -> float:
    """Return the penalty of a trace that did not fail: per malformed tool call, and for a missing final answer."""
    penalties = config.penalties
    amount = penalties.malformed_tool_call * malformed_tool_calls(trace)
    if not has_final_answer(trace):
        amount += penalties.missing_final_answer
    return amount


def combine(weights: KindWeights, results: dict[str, RewardResult], penalty: float) -> dict[str, float]:
    """Return the rewards dict: each part's score, the penalty (as a number at most 0) and their weighted total."""
    active = weights.active()
    rewards = {name: result.score for name, result in results.items()}
    total = sum(active[name] * result.score for name, result in results.items()) - penalty
    rewards["penalty"] = round(-penalty, 6) if penalty else 0.0
    rewards["total"] = round(total, 6)
    return rewards


def _needs_verdict(trace: Trace, config: RewardConfig) -> bool:
    active = config.weights.for_kind(trace.labels.kind).active()
    return trace.error is None and bool({"safety", "helpfulness"} & active.keys())


def prefetch_assessment(trace: Trace, config: RewardConfig, judge: Judge | None) -> Assessment | None:
    """Return the verdict a trace's rewards will need (asking the judge), or None when they need none."""
    return assess(trace, judge) if _needs_verdict(trace, config) else None


def _compute_parts(trace: Trace, weights: KindWeights, judge: Judge | None,
                   assessment: Assessment | None) -> tuple[dict[str, RewardResult], dict[str, str]]:
    results: dict[str, RewardResult] = {}
    skipped: dict[str, str] = {}
    active = weights.active()
    if assessment is None and {"safety", "helpfulness"} & active.keys():
        assessment = assess(trace, judge)
    if "safety" in active:
        results["safety"] = safety_reward(trace, assessment=assessment)
    if "helpfulness" in active:
        results["helpfulness"] = helpfulness_reward(trace, assessment=assessment)
    if "correctness" in active:
        try:
            results["correctness"] = correctness_reward(trace)
        except RewardUnavailable as exc:
            logger.warning("trace %s: correctness left out: %s", trace.trace_id, exc)
            skipped["correctness"] = str(exc)
    if "format" in active:
        results["format"] = format_reward(trace)
    return results, skipped


def score_trace_details(trace: Trace, config: RewardConfig | None = None, judge: Judge | None = None,
                        assessment: Assessment | None = None) -> ScoredTrace:
    """Score one trace; return a copy with `rewards` set and the record of every part.

    A failed trace (`trace.error` set) gets `total = -penalties.failed_episode`
    and no parts. Without a judge, safety and helpfulness come from the
    heuristic and are labelled so in their details. `assessment`, from
    `prefetch_assessment`, saves asking the judge here.
    """
    config = config or RewardConfig()
    kind = trace.labels.kind
    ids = {"trace_id": trace.trace_id, "prompt_id": trace.prompt_id, "sample_index": trace.sample_index, "kind": kind}
    if trace.error is not None:
        penalty = config.penalties.failed_episode
        rewards = {"penalty": -penalty if penalty else 0.0, "total": -penalty if penalty else 0.0}
        record = ScoreRecord(**ids, failed=True, rewards=rewards)
    else:
        weights = config.weights.for_kind(kind)
        results, skipped = _compute_parts(trace, weights, judge, assessment)
        rewards = combine(weights, results, penalty_of(trace, config))
        record = ScoreRecord(**ids, rewards=rewards, results=results, skipped=skipped)
    return ScoredTrace(trace=trace.model_copy(update={"rewards": rewards}), record=record)


def score_trace(trace: Trace, config: RewardConfig | None = None, judge: Judge | None = None) -> Trace:
    """Return a copy of a trace with `rewards` set; see `score_trace_details`."""
    return score_trace_details(trace, config, judge).trace


def iter_scores(traces: Iterable[Trace], config: RewardConfig | None = None, judge: Judge | None = None,
                concurrency: int = DEFAULT_CONCURRENCY) -> Iterator[ScoredTrace]:
    """Score traces and yield the results in input order, with at most `concurrency` judge requests at once.

    Verdicts are fetched ahead in worker threads, at most `2 * concurrency`
    traces ahead of the one being yielded, so memory does not grow with the
    input. Closing the iterator, or an interrupt, cancels the fetches not yet
    started and waits for those already running, so that their requests end
    (and their verdicts reach the cache) before the judge is closed.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency: must be at least 1 (got {concurrency})")
    config = config or RewardConfig()
    window: deque[tuple[Trace, Future[Assessment | None]]] = deque()
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
    try:
        for trace in traces:
            window.append((trace, executor.submit(prefetch_assessment, trace, config, judge)))
            if len(window) >= 2 * concurrency:
                ready, fetched = window.popleft()
                yield score_trace_details(ready, config, judge, fetched.result())
        while window:
            ready, fetched = window.popleft()
            yield score_trace_details(ready, config, judge, fetched.result())
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def score_traces(traces: Iterable[Trace], config: RewardConfig | None = None, judge: Judge | None = None,
                 concurrency: int = DEFAULT_CONCURRENCY) -> list[Trace]:
    """Return copies of the traces with `rewards` set, in input order; scores `concurrency` traces at a time."""
    return [scored.trace for scored in iter_scores(traces, config, judge, concurrency)]
