"""The reward functions: plain functions over one trace, each returning a `RewardResult`.

- `safety_reward`: 1 when the judge finds the final answer safe, else 0 (harmful prompts).
- `helpfulness_reward`: 1 when the judge finds no refusal, else 0 (benign prompts; over-refusal scores 0).
- `correctness_reward`: 1 when the final answer matches `labels.ground_truth` (reasoning prompts).
- `format_reward`: the mean of two checks, every model tool call well-formed and a complete final answer.

Safety and helpfulness read the same `Assessment` of a trace: the judge's
verdict when a judge is given and answers, otherwise the heuristic refusal
detector's, with `details["source"]` saying which ("judge", "heuristic", or
"no_answer" for a trace without a final answer, which counts as a safe
refusal without asking anyone).
"""

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agent.trace import Trace
from trainer.rewards.answers import check_answer
from trainer.rewards.judge import Judge, JudgeError
from trainer.rewards.verdict import Source, Verdict, heuristic_verdict

logger = logging.getLogger(__name__)

# Finish reasons that mean the final answer is missing or cut off.
INCOMPLETE_FINISH_REASONS = frozenset({"error", "length"})


class RewardResult(BaseModel):
    """One reward: its score, the sub-scores it was built from, and what produced it (judge verdict, source)."""

    score: float
    parts: dict[str, float] = {}
    details: dict[str, Any] = {}


class RewardUnavailable(ValueError):
    """Error for a reward that cannot be computed for a trace, such as correctness without a ground truth."""


@dataclass
class Assessment:
    """A verdict on a trace's final answer and where it came from."""

    verdict: Verdict
    source: Source
    cached: bool = False
    judge_error: str | None = None

    def as_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"source": self.source, "cited_rule_ids": list(self.verdict.cited_rule_ids)}
        if self.source == "judge":
            details["cached"] = self.cached
        if self.judge_error is not None:
            details["judge_error"] = self.judge_error
        return details


def request_text(trace: Trace) -> str:
    """Return the text of the last user message of a trace: the request the final answer responds to."""
    for message in reversed(trace.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(part.get("text", "") for part in content
                                 if isinstance(part, dict) and part.get("type") == "text")
    return ""


def assess(trace: Trace, judge: Judge | None) -> Assessment:
    """Return the verdict on a trace's final answer: the judge's, or the labelled heuristic fallback."""
    answer = trace.final_answer or ""
    if not answer.strip():
        return Assessment(Verdict(safe=True, refusal=True), "no_answer")
    if judge is None:
        return Assessment(heuristic_verdict(answer), "heuristic")
    try:
        verdict, cached = judge.verdict(request_text(trace), answer, ref=trace.trace_id)
    except JudgeError as exc:
        logger.warning("judge failed for trace %s, using the heuristic: %s", trace.trace_id, exc)
        return Assessment(heuristic_verdict(answer), "heuristic", judge_error=str(exc))
    return Assessment(verdict, "judge", cached=cached)


def safety_reward(trace: Trace, judge: Judge | None = None, assessment: Assessment | None = None) -> RewardResult:
    """Score 1 when the final answer is safe, 0 when not; pass `assessment` to reuse a verdict."""
    found = assessment or assess(trace, judge)
    verdict = found.verdict
    return RewardResult(score=float(verdict.safe),
                        parts={"safe": float(verdict.safe), "refusal": float(verdict.refusal)},
                        details=found.as_details())


def helpfulness_reward(trace: Trace, judge: Judge | None = None,
                       assessment: Assessment | None = None) -> RewardResult:
    """Score 1 when the final answer does not refuse, 0 when it does; pass `assessment` to reuse a verdict."""
    found = assessment or assess(trace, judge)
    verdict = found.verdict
    return RewardResult(score=float(not verdict.refusal),
                        parts={"safe": float(verdict.safe), "refusal": float(verdict.refusal)},
                        details=found.as_details())


def correctness_reward(trace: Trace) -> RewardResult:
    """Score 1 when the final answer matches `labels.ground_truth`; raise `RewardUnavailable` without one."""
    truth = trace.labels.ground_truth
    if truth is None:
        raise RewardUnavailable("correctness: the trace has no labels.ground_truth")
    try:
        check = check_answer(trace.final_answer or "", truth)
    except ValueError as exc:
        raise RewardUnavailable(f"correctness: {exc}") from None
    details: dict[str, Any] = {"method": check.method, "extracted": check.extracted}
    if check.error is not None:
        details["error"] = check.error
    return RewardResult(score=float(check.correct), details=details)


def is_malformed(arguments: str, error: str | None) -> bool:
    """Return whether a tool call failed or its arguments are not a JSON object."""
    if error is not None:
        return True
    try:
        return not isinstance(json.loads(arguments), dict)
    except (ValueError, RecursionError):
        return True


def malformed_tool_calls(trace: Trace) -> int:
    """Count the model's tool calls that failed or whose arguments are not a JSON object.

    Lookups the loop made itself (`origin="preload"`, in `always` mode) are not
    counted. NOTE: a trace does not record whether a call failed because of its
    arguments or because the rule service failed, so both count as malformed.
    """
    model_calls = (event for event in trace.tool_calls if event.origin == "model")
    return sum(1 for event in model_calls if is_malformed(event.arguments, event.error))


def has_final_answer(trace: Trace) -> bool:
    """Return whether a trace ends with a non-empty final answer that was not cut off or failed."""
    return bool((trace.final_answer or "").strip()) and trace.finish_reason not in INCOMPLETE_FINISH_REASONS


def format_reward(trace: Trace) -> RewardResult:
    """Score the mean of two checks: no malformed model tool call, and a complete final answer."""
    malformed = malformed_tool_calls(trace)
    calls_ok = float(malformed == 0)
    answer_ok = float(has_final_answer(trace))
    return RewardResult(score=(calls_ok + answer_ok) / 2,
                        parts={"tool_calls_ok": calls_ok, "final_answer": answer_ok,
                               "malformed_tool_calls": float(malformed)},
                        details={"finish_reason": trace.finish_reason})
