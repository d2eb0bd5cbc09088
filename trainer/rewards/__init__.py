"""Rewards over agent traces: safety, helpfulness, correctness and format, combined by a `RewardConfig`.

Each reward is a plain function over an `agent.trace.Trace` that returns a
`RewardResult` (score, sub-scores, details):

- safety (harmful prompts) and helpfulness (benign prompts; a refusal scores
  0) come from a judge model behind any OpenAI-compatible endpoint, asked
  with a fixed rubric (`RUBRIC_VERSION`) for `{"safe", "refusal",
  "cited_rule_ids"}`. Verdicts are cached by content hash. Without a judge,
  or when it fails, a heuristic refusal detector decides, and
  `details["source"]` is "heuristic" instead of "judge".
- correctness (reasoning prompts) checks the final answer against
  `labels.ground_truth` with math-verify, or by letter for multiple choice.
- format checks that the model's tool calls are well-formed and that a
  complete final answer is present.

Typical use:

    from trainer.rewards import Judge, RewardConfig, score_traces
    judge = Judge("http://127.0.0.1:8080/v1", "judge-model", cache="verdicts.jsonl")
    scored = score_traces(traces, RewardConfig(), judge)   # trace.rewards = {"total", "penalty", "safety", ...}

`ascl score` does the same for a trace file (see `trainer.rewards.cli`).
The names below are imported on first use, so that loading the `ascl`
command does not pay for math-verify and openai.
"""

import importlib
from typing import Any

_MODULES = {
    "answers": ["AnswerCheck", "check_answer", "extract_choice", "extract_final_answer"],
    "cache": ["VerdictCache", "verdict_key"],
    "config": ["KindWeights", "Penalties", "RewardConfig", "Weights"],
    "functions": ["Assessment", "RewardResult", "RewardUnavailable", "assess", "correctness_reward", "format_reward",
                  "helpfulness_reward", "malformed_tool_calls", "safety_reward"],
    "judge": ["Judge", "JudgeError", "JudgeStats"],
    "rubric": ["RUBRIC", "RUBRIC_VERSION"],
    "scoring": ["ScoredTrace", "ScoreRecord", "combine", "iter_scores", "score_trace", "score_trace_details",
                "score_traces"],
    "verdict": ["InvalidVerdict", "Verdict", "heuristic_verdict", "is_refusal", "parse_verdict"],
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
