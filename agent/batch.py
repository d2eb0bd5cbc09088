"""Batch runs: G episodes per prompt, bounded concurrency, one trace file, resumable.

A batch reads a prompt file (JSON Lines: `id`, `messages` or `prompt`,
`kind`, `ground_truth`), runs `samples_per_prompt` episodes per prompt, all
sharing `group_id = prompt id` (the group GRPO normalises over), and appends
each trace to the output as soon as its episode ends. An episode is known by
(prompt_id, sample_index): running the same batch again runs only the
episodes that are not in the output yet. A torn last line left by a crash
is cut away before appending. Cancelling the run (Ctrl-C) stops the episodes
in flight without writing a partial line; they run on the next resume.
"""

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.backend import RuleBackend
from agent.episode import EpisodeConfig
from agent.loop import arun_episode
from agent.text_loop import TextTags, arun_text_episode
from agent.trace import (
    FINISH_ERROR, Labels, PromptKind, Trace, TraceWriter, parse_trace_line, repair_torn_tail, scan_traces,
)

Protocol = Literal["chat", "text"]


class PromptMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]


class PromptRecord(BaseModel):
    """One line of a prompt file; exactly one of `messages` and `prompt`."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[PromptMessage] | None, Field(min_length=1)] = None
    prompt: Annotated[str | None, Field(min_length=1)] = None
    kind: PromptKind | None = None
    category: Annotated[str | None, Field(min_length=1)] = None
    ground_truth: Any = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_input(self) -> "PromptRecord":
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' (a chat) and 'prompt' (a string)")
        return self

    def chat_messages(self) -> list[dict[str, Any]]:
        if self.messages is not None:
            return [message.model_dump() for message in self.messages]
        return [{"role": "user", "content": self.prompt}]


class BatchError(ValueError):
    """Error for a prompt file or an output file that a batch cannot use; the message names the line and the problem."""


def load_prompts(path: str | Path, protocol: Protocol = "chat") -> list[PromptRecord]:
    """Read and validate a prompt file; raise `BatchError` naming the line and field of the first problem."""
    path = Path(path)
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _parse_prompt(path, number, line)
            if protocol == "text" and record.prompt is None:
                raise BatchError(f"{path} line {number}: field prompt: the text protocol needs a 'prompt' string")
            if record.id in seen:
                first = seen[record.id]
                raise BatchError(f"{path} line {number}: field id: {record.id!r} is already used on line {first}")
            seen[record.id] = number
            records.append(record)
    if not records:
        raise BatchError(f"{path}: no prompts in the file")
    return records


def _parse_prompt(path: Path, number: int, line: str) -> PromptRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BatchError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise BatchError(f"{path} line {number}: expected a JSON object, got {type(data).__name__}")
    try:
        return PromptRecord.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field_text = f"field {where}: " if where else ""
        message = error["msg"].removeprefix("Value error, ")
        raise BatchError(f"{path} line {number}: {field_text}{message}") from None


@dataclass
class BatchSummary:
    """Counts of a batch run; `tool_call_rate` is over the episodes that did not fail."""

    planned: int
    already_done: int
    failed_before: int = 0  # failed traces already in the output, kept unless --retry-failed
    ran: int = 0
    failed: int = 0
    with_tool_calls: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    interrupted: bool = False
    duration_s: float = 0.0

    @property
    def to_run(self) -> int:
        return self.planned - self.already_done

    @property
    def tool_call_rate(self) -> float | None:
        succeeded = self.ran - self.failed
        return self.with_tool_calls / succeeded if succeeded else None

    def add(self, trace: Trace) -> None:
        self.ran += 1
        failed = trace.finish_reason == FINISH_ERROR
        self.failed += int(failed)
        self.with_tool_calls += int(not failed and trace.num_tool_calls > 0)
        self.tool_calls += trace.num_tool_calls
        self.prompt_tokens += trace.usage.prompt_tokens
        self.completion_tokens += trace.usage.completion_tokens
        self.finish_reasons[trace.finish_reason] += 1


def prepare_output(output: Path, config: EpisodeConfig, protocol: Protocol,
                   retry_failed: bool = False) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Make the output ready to append to; return the keys of the episodes it contains, and of those that failed.

    A torn last line is cut away. Other invalid lines raise `BatchError`, and
    so do traces of another model, mode or protocol, because mixing them would
    spoil the groups. With `retry_failed`, failed traces are removed (the file
    is rewritten atomically), so those episodes run again.
    """
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        return set(), set()
    repair_torn_tail(output)
    scan = scan_traces(output)
    if scan.problems:
        shown = "; ".join(str(problem) for problem in scan.problems[:3])
        raise BatchError(f"{output}: cannot resume, {len(scan.problems)} bad line(s): {shown}")
    wanted = (config.model, config.mode, protocol)
    for number, trace in enumerate(scan.traces, start=1):
        found = (trace.model, trace.mode, trace.protocol)
        if found != wanted:
            raise BatchError(
                f"{output} line {number}: contains a trace of model {found[0]!r}, mode {found[1]!r}, "
                f"protocol {found[2]!r}; "
                f"this run is model {wanted[0]!r}, mode {wanted[1]!r}, protocol {wanted[2]!r}. Use another --output"
            )
    failed = {trace.key for trace in scan.traces if trace.finish_reason == FINISH_ERROR}
    if retry_failed and failed:
        _drop_failed(output)
        return {trace.key for trace in scan.traces} - failed, set()
    return {trace.key for trace in scan.traces}, failed


def _drop_failed(output: Path) -> None:
    # Split on b"\n" only: JSON leaves U+2028 and similar unescaped, and str.splitlines would cut there.
    lines = output.read_bytes().split(b"\n")[:-1]
    kept = [line + b"\n" for line in lines if parse_trace_line(line.decode("utf-8")).finish_reason != FINISH_ERROR]
    temporary = output.with_name(output.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, output)
    except OSError:
        temporary.unlink(missing_ok=True)  # the output itself is untouched; a full disk needs the space back
        raise


@dataclass
class BatchRun:
    """One batch: what to run, against what, and where to write it."""

    client: Any  # an openai.AsyncOpenAI
    backend: RuleBackend | None
    config: EpisodeConfig
    prompts: list[PromptRecord]
    output: Path
    samples_per_prompt: int = 1
    concurrency: int = 8
    protocol: Protocol = "chat"
    tags: TextTags | None = None
    retry_failed: bool = False
    fsync: bool = False

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt: must be at least 1 (got {self.samples_per_prompt})")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: must be at least 1 (got {self.concurrency})")
        self.output = Path(self.output)

    def plan(self) -> tuple[list[tuple[PromptRecord, int]], BatchSummary]:
        """Prepare the output and return the episodes still to run, with a summary that counts them."""
        done, failed = prepare_output(self.output, self.config, self.protocol, self.retry_failed)
        planned = [(prompt, index) for prompt in self.prompts for index in range(self.samples_per_prompt)]
        todo = [(prompt, index) for prompt, index in planned if (prompt.id, index) not in done]
        failed_before = sum(1 for prompt, index in planned if (prompt.id, index) in failed)
        return todo, BatchSummary(planned=len(planned), already_done=len(planned) - len(todo), failed_before=failed_before)

    async def episode(self, prompt: PromptRecord, index: int) -> Trace:
        labels = Labels(kind=prompt.kind, category=prompt.category, ground_truth=prompt.ground_truth)
        ids = {"prompt_id": prompt.id, "group_id": prompt.id, "sample_index": index, "labels": labels}
        if self.protocol == "text":
            return await arun_text_episode(self.client, self.backend, prompt.prompt or "", self.config,
                                           tags=self.tags, **ids)
        return await arun_episode(self.client, self.backend, prompt.chat_messages(), self.config, **ids)


async def run_batch(run: BatchRun, on_start: Callable[[BatchSummary], None] | None = None,
                    on_trace: Callable[[Trace], None] | None = None) -> BatchSummary:
    """Run the missing episodes of a batch with at most `run.concurrency` in flight; return the summary.

    `on_start` gets the summary before the first episode (to size a progress
    bar); `on_trace` gets each trace after it is written. Cancellation stops
    the run between lines and returns a summary with `interrupted` set.
    """
    todo, summary = run.plan()
    if on_start is not None:
        on_start(summary)
    started = time.perf_counter()
    jobs = iter(todo)
    writer = TraceWriter(run.output, fsync=run.fsync)

    async def worker() -> None:
        for prompt, index in jobs:  # one shared iterator: each job is taken by exactly one worker
            trace = await run.episode(prompt, index)
            writer.write(trace)
            summary.add(trace)
            if on_trace is not None:
                on_trace(trace)

    tasks = [asyncio.create_task(worker()) for _ in range(min(run.concurrency, len(todo)))]
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        summary.interrupted = True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        summary.duration_s = time.perf_counter() - started
    return summary
