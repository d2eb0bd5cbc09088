"""Pieces every export format shares: reading traces, the prompt of a trace, labels as text, atomic writes."""

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.trace import Trace, TraceFileError, read_traces

logger = logging.getLogger(__name__)

DATA_SOURCE_PREFIX = "ascl/"
UNLABELLED_KIND = "unlabelled"


class ExportError(ValueError):
    """Error for input an export cannot use; the message names the trace, field or option and what to do."""


def load_traces(path: str | Path) -> list[Trace]:
    """Read a trace file and return its traces in a stable order: prompt id, sample index, trace id.

    Any bad line (an unknown `schema_version` included) raises `ExportError` naming the
    line, because an export that silently drops episodes would bias the training data.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--traces {path}: file not found")
    try:
        traces = read_traces(path)
    except TraceFileError as exc:
        raise ExportError(f"--traces {exc}") from None
    except OSError as exc:
        raise ExportError(f"--traces {path}: cannot be read ({exc.strerror})") from None
    if not traces:
        raise ExportError(f"--traces {path}: the file contains no traces")
    return sorted(traces, key=lambda trace: (trace.prompt_id, trace.sample_index, trace.trace_id))


def kind_of(trace: Trace) -> str:
    """Return the prompt kind, or "unlabelled" when the prompt file gave none."""
    return trace.labels.kind or UNLABELLED_KIND


def data_source_of(trace: Trace) -> str:
    return DATA_SOURCE_PREFIX + kind_of(trace)


def ground_truth_text(value: Any) -> str:
    """Return the ground truth as text: strings unchanged, None as "", anything else as compact JSON.

    Trainers pass the ground truth to reward functions as one string column, so every
    row needs the same type.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_length(trace: Trace) -> int:
    """Return how many leading messages of a trace form its prompt: every message up to the last user message.

    The agent loop appends only assistant and tool messages, so everything after
    the last user message was produced during the episode.
    """
    for index in range(len(trace.messages) - 1, -1, -1):
        if trace.messages[index].get("role") == "user":
            return index + 1
    raise ExportError(f"trace {trace.trace_id} (prompt {trace.prompt_id}): messages contain no user message")


def prompt_messages(trace: Trace) -> list[dict[str, str]]:
    """Return the prompt of a trace as `{"role", "content"}` messages with text content."""
    messages = []
    for position, message in enumerate(trace.messages[: prompt_length(trace)]):
        role = message.get("role")
        if not isinstance(role, str):
            raise ExportError(f"trace {trace.trace_id}: messages.{position}.role is missing")
        messages.append({"role": role, "content": content_text(message.get("content"), trace, position)})
    return messages


def content_text(content: Any, trace: Trace, position: int) -> str:
    """Return the text of a message content: a string, or a list of text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ExportError(f"trace {trace.trace_id}: messages.{position}.content has a {kind!r} part; "
                                  "exports support text content only")
            texts.append(str(part.get("text", "")))
        return "\n".join(texts)
    raise ExportError(f"trace {trace.trace_id}: messages.{position}.content is a {type(content).__name__}, "
                      "expected a string or a list of text parts")


def first_per_prompt(traces: Iterable[Trace]) -> list[Trace]:
    """Return one trace per prompt id, the one with the lowest sample index, in prompt id order.

    Trainers such as verl sample their own G rollouts per prompt, so a prompt file
    for them needs each prompt once.
    """
    chosen: dict[str, Trace] = {}
    differing = 0
    for trace in traces:
        first = chosen.setdefault(trace.prompt_id, trace)
        if first is not trace and prompt_messages(first) != prompt_messages(trace):
            differing += 1
    if differing:
        logger.warning("%d trace(s) have a different prompt from the first sample of their prompt id; "
                       "the first sample's prompt is exported", differing)
    return [chosen[prompt_id] for prompt_id in sorted(chosen)]


def rule_ids_of(trace: Trace) -> list[str]:
    """Return the ids of every rule a lookup returned to the context, first occurrence first, without repeats."""
    seen: dict[str, None] = {}
    for event in trace.tool_calls:
        if event.error is None:
            for rule_id in event.rule_ids:
                seen.setdefault(rule_id, None)
    return list(seen)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file next to `path`, then move it over `path` in one rename.

    Readers see the old file or the complete new one, never a partial file. On any
    error the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name that `write` creates itself, so the file gets the usual permissions (umask), not mkstemp's 0600.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON Lines atomically, keys sorted, so equal input gives byte-identical files."""

    def write(target: Path) -> None:
        with open(target, "x", encoding="utf-8", newline="\n") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n")

    write_atomically(path, write)


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: Any) -> None:
    """Write rows as one Parquet file atomically with a fixed Arrow schema, so column types never depend on the data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)

    def write(target: Path) -> None:
        pq.write_table(table, str(target), compression="zstd")

    write_atomically(path, write)
