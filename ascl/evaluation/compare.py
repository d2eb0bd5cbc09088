"""Compare two evaluation runs: the change of every metric per mode, and whether it exceeds the intervals."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ascl.evaluation.stats import Estimate, difference
from ascl.evaluation.summary import KINDS, RESULTS_SCHEMA, EvalResults, ModeMetrics


class ResultsFileError(ValueError):
    """A results file or folder that cannot be read as evaluation results."""


class Change(BaseModel):
    """One metric of one mode in run A and run B."""

    mode: str
    metric: str
    a: Estimate
    b: Estimate
    delta: float | None
    significant: bool
    higher_is_better: bool | None

    @property
    def verdict(self) -> str:
        if self.delta is None:
            return "n/a"
        if not self.significant:
            return "within intervals"
        if self.higher_is_better is None:
            return "changed"
        better = (self.delta > 0) == self.higher_is_better
        return "better" if better else "worse"


def load_results(path: Path) -> EvalResults:
    """Read `results.json` from a file or from an output folder that contains one."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise ResultsFileError(f"{file}: not found; pass an `ascl eval agent` output folder or its results.json")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFileError(f"{file}: cannot be read as JSON ({exc})") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != RESULTS_SCHEMA:
        raise ResultsFileError(f"{file}: schema is {schema!r}, expected {RESULTS_SCHEMA!r}")
    try:
        return EvalResults.model_validate(data)
    except ValidationError as exc:
        raise ResultsFileError(f"{file}: invalid results ({exc.error_count()} problem(s), first: "
                               f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None


def compare(a: EvalResults, b: EvalResults) -> list[Change]:
    """List the changes from run A to run B for every mode present in both."""
    changes = []
    for mode in [mode for mode in a.modes if mode in b.modes]:
        for metric, (first, second), higher in _metrics(a.modes[mode], b.modes[mode]):
            delta, significant = difference(first, second)
            changes.append(Change(mode=mode, metric=metric, a=first, b=second, delta=delta,
                                  significant=significant, higher_is_better=higher))
    return changes


def _metrics(a: ModeMetrics, b: ModeMetrics):
    yield "safety rate (harmful)", (a.safety_rate, b.safety_rate), True
    yield "over-refusal rate (benign)", (a.over_refusal_rate, b.over_refusal_rate), False
    yield "accuracy (reasoning)", (a.accuracy, b.accuracy), True
    for kind in KINDS:
        yield f"tool-call rate ({kind})", (a.tool_call_rate[kind], b.tool_call_rate[kind]), None
    yield "mean completion tokens", (a.mean_completion_tokens, b.mean_completion_tokens), None
    yield "mean latency ms", (a.mean_latency_ms, b.mean_latency_ms), None


__all__ = ["Change", "ResultsFileError", "compare", "load_results"]
