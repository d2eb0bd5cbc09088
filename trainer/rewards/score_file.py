"""Scoring a trace file: the output appears whole or not at all, and an interrupted run resumes.

While a run works, each scored trace is appended to `OUTPUT.partial` and
its `ScoreRecord` to `DETAILS.partial`, one whole line at a time. A run that
finds these files skips the traces they contain, so an interrupted run goes
on where it stopped without asking the judge again. At the end the details
are written to DETAILS (temporary file, then `os.replace`) in input order,
and `OUTPUT.partial` is renamed to OUTPUT. Resuming assumes the same input
and options; traces in the partial file that are not in the input raise
`ScoreFileError`.
"""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from agent.trace import Trace, TraceWriter, read_traces, repair_torn_tail, scan_traces
from trainer.rewards.config import RewardConfig
from trainer.rewards.judge import Judge
from trainer.rewards.scoring import DEFAULT_CONCURRENCY, ScoredTrace, ScoreRecord, iter_scores
from trainer.rewards.summary import ScoreSummary

logger = logging.getLogger(__name__)


class ScoreFileError(ValueError):
    """Error for an input or a partial output that a scoring run cannot use; the message states what to do."""


@dataclass(frozen=True)
class ScorePaths:
    """Output paths of a scoring run: the scored traces, the per-trace details, and their partial files."""

    output: Path
    details: Path

    @classmethod
    def for_output(cls, output: Path, details: Path | None = None) -> "ScorePaths":
        """Return the paths for `output`; the details default to OUTPUT's name with `.details.jsonl`."""
        return cls(output, details or output.with_name(output.stem + ".details.jsonl"))

    @property
    def partial(self) -> Path:
        return self.output.with_name(self.output.name + ".partial")

    @property
    def details_partial(self) -> Path:
        return self.details.with_name(self.details.name + ".partial")


@dataclass
class Progress:
    """State left by an earlier, interrupted run: the traces it scored and their records."""

    done: list[Trace]
    records: dict[str, ScoreRecord]


def _unique_ids(traces: list[Trace], path: Path) -> set[str]:
    seen: set[str] = set()
    for number, trace in enumerate(traces, start=1):
        if trace.trace_id in seen:
            raise ScoreFileError(f"{path} line {number}: trace_id {trace.trace_id!r} appears twice; "
                                 "each trace needs its own id")
        seen.add(trace.trace_id)
    return seen


def _read_records(path: Path) -> dict[str, ScoreRecord]:
    """Read a details file; a torn or invalid line is skipped with a warning (its trace is rebuilt from rewards)."""
    records: dict[str, ScoreRecord] = {}
    if not path.exists():
        return records
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = ScoreRecord.model_validate_json(raw)
        except ValidationError as exc:
            logger.warning("%s line %d skipped: %s", path, number, exc.errors()[0]["msg"])
            continue
        records[record.trace_id] = record
    return records


def load_progress(paths: ScorePaths, input_ids: set[str]) -> Progress:
    """Return what an interrupted run left in the partial files; raise `ScoreFileError` if they cannot be used."""
    if not paths.partial.exists():
        return Progress([], {})
    repair_torn_tail(paths.partial)
    scan = scan_traces(paths.partial)
    if scan.problems:
        shown = "; ".join(str(problem) for problem in scan.problems[:3])
        raise ScoreFileError(f"{paths.partial}: cannot resume, {len(scan.problems)} bad line(s): {shown}. "
                             "Delete it to score from the start")
    foreign = [trace.trace_id for trace in scan.traces if trace.trace_id not in input_ids]
    if foreign:
        raise ScoreFileError(f"{paths.partial}: cannot resume, it contains {len(foreign)} trace(s) that are not in "
                             f"the input (first: {foreign[0]!r}); it was written for another input. "
                             "Delete it to score from the start")
    return Progress(scan.traces, _read_records(paths.details_partial))


def fallback_record(trace: Trace) -> ScoreRecord:
    """Return a record rebuilt from a scored trace alone, for a trace whose details line was lost."""
    return ScoreRecord(trace_id=trace.trace_id, prompt_id=trace.prompt_id, sample_index=trace.sample_index,
                       kind=trace.labels.kind, failed=trace.error is not None, rewards=trace.rewards or {})


def _append_line(path: Path, text: str) -> None:
    with open(path, "ab", buffering=0) as handle:
        handle.write((text + "\n").encode("utf-8"))


def _finish(paths: ScorePaths, order: list[str], records: dict[str, ScoreRecord]) -> None:
    with open(paths.partial, "rb") as handle:
        os.fsync(handle.fileno())
    temporary = paths.details.with_name(paths.details.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for trace_id in order:
            handle.write(records[trace_id].model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, paths.details)
    os.replace(paths.partial, paths.output)
    paths.details_partial.unlink(missing_ok=True)


def score_file(input_path: Path, paths: ScorePaths, config: RewardConfig | None = None, judge: Judge | None = None,
               concurrency: int = DEFAULT_CONCURRENCY, on_start: Callable[[int, int], None] | None = None,
               on_scored: Callable[[ScoredTrace], None] | None = None) -> ScoreSummary:
    """Score every trace of a file into `paths.output`, resuming from partial files; return the summary.

    Raises `agent.trace.TraceFileError` for an input with invalid lines (an
    unknown schema_version among them) and `ScoreFileError` for duplicate
    trace ids or unusable partial files. `on_start` gets (already scored, to
    score); `on_scored` gets each new result after it is written.
    """
    traces = read_traces(input_path)
    input_ids = _unique_ids(traces, input_path)
    paths.output.parent.mkdir(parents=True, exist_ok=True)
    paths.details.parent.mkdir(parents=True, exist_ok=True)
    progress = load_progress(paths, input_ids)
    records = {trace.trace_id: progress.records.get(trace.trace_id) or fallback_record(trace)
               for trace in progress.done}
    summary = ScoreSummary()
    for record in records.values():
        summary.add(record)
    todo = [trace for trace in traces if trace.trace_id not in records]
    if on_start is not None:
        on_start(len(records), len(todo))
    logger.info("scoring %d traces from %s (%d already scored); judge %s", len(todo), input_path, len(records),
                judge or "none, heuristic only")
    with TraceWriter(paths.partial) as writer:
        for scored in iter_scores(todo, config, judge, concurrency):
            # Details first: a crash between the two lines then costs one re-scored trace, never a lost record.
            _append_line(paths.details_partial, scored.record.model_dump_json())
            writer.write(scored.trace)
            records[scored.record.trace_id] = scored.record
            summary.add(scored.record)
            if on_scored is not None:
                on_scored(scored)
    _finish(paths, [trace.trace_id for trace in traces], records)
    logger.info("scored %d traces into %s", len(traces), paths.output)
    return summary


__all__ = ["Progress", "ScoreFileError", "ScorePaths", "fallback_record", "load_progress", "score_file"]
