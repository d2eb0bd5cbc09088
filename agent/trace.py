"""Episode traces: the record of one agent episode, and their JSON Lines files.

One trace per episode, one JSON object per line. `TraceWriter` appends each
trace as one complete line with a single `write` call, so a file is readable
while a run is still writing it, and a crash can leave at most one torn line
at the end. `scan_traces` reads a file and reports every bad line with its
number instead of skipping it; `read_traces` raises on any of them, except
a torn last line when `allow_torn_tail` is set.
"""

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

Mode = Literal["adaptive", "never", "always"]
PromptKind = Literal["harmful", "benign", "reasoning"]

# Finish reasons written by the loop. Server values other than these (e.g. "abort" from some
# servers) are recorded as the server sent them.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CONTENT_FILTER = "content_filter"
FINISH_TOOL_CALLS_LIMIT = "tool_calls_limit"
FINISH_ERROR = "error"

logger = logging.getLogger(__name__)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(_Record):
    """Sampling settings sent with every model request; None means the server default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None


class ToolCallEvent(_Record):
    """One rule lookup: a tool call the model made, or the up-front lookup of `always` mode."""

    origin: Literal["model", "preload"] = "model"
    turn: int = Field(ge=0, description="Index of the model request that produced the call (0-based).")
    tool_call_id: str | None = None
    name: str
    arguments: str = Field(description="The arguments exactly as the model wrote them.")
    query: str | None = Field(
        default=None, description="The query, when the arguments parsed as a JSON object with one."
    )
    rule_ids: list[str] = []
    scores: list[float] = []
    latency_ms: float = Field(ge=0)
    error: str | None = Field(default=None, description="The error text the model received, when the call failed.")


class TextSegment(_Record):
    """A piece of a text-tag response: written by the model, or inserted by the loop (mask it in training)."""

    source: Literal["model", "tool"]
    text: str


class Usage(_Record):
    """Token counts summed over every model request of the episode."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    requests: int = Field(default=0, ge=0, description="Model requests that returned a response.")
    reported: bool = Field(default=True, description="False when some response carried no usage.")


class Labels(_Record):
    """Labels of the prompt: its kind, category and correct answer, copied from the prompt file."""

    kind: PromptKind | None = None
    category: str | None = Field(
        default=None, description="Finer grouping for reports, such as a hazard category or a benchmark subset."
    )
    ground_truth: Any = None


class Trace(_Record):
    """One agent episode. Field meanings are in DESIGN.md, section "Traces"."""

    schema_version: Literal[1] = SCHEMA_VERSION
    trace_id: str
    prompt_id: str
    group_id: str
    sample_index: int = Field(ge=0)
    model: str
    base_url: str | None = None
    sampling: Sampling = Sampling()
    mode: Mode
    protocol: Literal["chat", "text"] = "chat"
    max_turns: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(description="The full conversation in OpenAI chat form.")
    text_segments: list[TextSegment] | None = Field(
        default=None, description="Text-tag protocol only: the response in model-written and inserted pieces."
    )
    tool_calls: list[ToolCallEvent] = []
    consulted_rules: bool = Field(description="True when at least one rule lookup returned rules to the context.")
    num_tool_calls: int = Field(ge=0, description="Tool calls the model made (preloaded lookups not counted).")
    final_answer: str | None = None
    reasoning_content: str | None = Field(
        default=None, description="Reasoning the server returned with the final answer."
    )
    finish_reason: str
    usage: Usage = Usage()
    labels: Labels = Labels()
    rewards: dict[str, float] | None = None
    index_version: str | None = None
    error: str | None = None
    started_at: datetime
    duration_ms: float = Field(ge=0)

    @property
    def key(self) -> tuple[str, int]:
        """(prompt_id, sample_index): what identifies an episode across a resumed batch run."""
        return self.prompt_id, self.sample_index


class TraceWriteError(OSError):
    """A trace could not be appended (for example, the disk is full); the lines before it are intact."""

    def __init__(self, path: Path, cause: OSError) -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, reason, str(path))
        self.message = (f"cannot write a trace to {path}: {reason[:1].lower()}{reason[1:]}; "
                        "the traces written before it are intact")

    def __str__(self) -> str:
        return self.message


class TraceWriter:
    """Appends traces to a JSON Lines file, one whole line per `write` call, flushed at once.

    The file is opened unbuffered in append mode, so each trace reaches the
    operating system as a single write and readers never see half a line from
    a running writer. With `fsync`, each line is also forced to disk. Safe to
    share between threads.
    """

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115  (closed in close())

    def write(self, trace: Trace) -> None:
        """Append one trace; raise `TraceWriteError` when it cannot, leaving the file as it was before."""
        data = (trace.model_dump_json() + "\n").encode("utf-8")
        with self._lock:
            start = os.fstat(self._file.fileno()).st_size
            try:
                view = memoryview(data)
                while view:  # a regular file takes the whole line at once; loop only for the rare short write
                    written = self._file.write(view)
                    view = view[written or 0:]
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                # A full disk accepts part of a line and then refuses the rest. Cutting
                # the part away keeps the file a list of whole traces, and the episode
                # runs again on resume.
                self._cut_back(start)
                raise TraceWriteError(self.path, exc) from exc

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._file.fileno(), size)
        except OSError as exc:
            logger.error("%s: could not remove a partly written line after a failed write (%s); "
                         "the next resume cuts it away", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class TraceProblem:
    """A line of a trace file that is not a valid trace."""

    line: int
    message: str
    torn: bool = False

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class TraceScan:
    """Everything read from a trace file: the valid traces and a problem for each bad line."""

    path: Path
    traces: list[Trace] = field(default_factory=list)
    problems: list[TraceProblem] = field(default_factory=list)

    @property
    def torn_tail(self) -> TraceProblem | None:
        """The problem of a last line cut short by a crash, if there is one."""
        return next((p for p in self.problems if p.torn), None)


class TraceFileError(ValueError):
    """Error for a trace file that contains invalid lines; the message lists them by line number."""

    def __init__(self, path: Path, problems: list[TraceProblem]) -> None:
        self.path = path
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{path}: {len(problems)} bad line(s): {shown}{more}")


def parse_trace_line(text: str) -> Trace:
    """Parse one line into a `Trace`; raise ValueError with a message that names the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not valid JSON (arrays or objects nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version is None:
        raise ValueError("schema_version is missing")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {version!r} is not supported; this version of ascl reads schema_version "
            f"{SCHEMA_VERSION} (a newer ascl may have written this file)"
        )
    try:
        return Trace.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "trace"
        more = f" (and {exc.error_count() - 1} more error(s))" if exc.error_count() > 1 else ""
        raise ValueError(f"field {where}: {first['msg']}{more}") from None


def scan_traces(path: str | Path) -> TraceScan:
    """Read every line of a trace file; bad lines become problems, none is skipped silently.

    A last line without its newline that does not parse is reported as torn
    (the writer crashed mid-line). Blank lines are bad lines too: the writer
    never writes them.
    """
    path = Path(path)
    scan = TraceScan(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    has_tail = lines[-1] != b""
    if not has_tail:
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        is_tail = has_tail and number == len(lines)
        try:
            scan.traces.append(parse_trace_line(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as exc:
            message = str(exc) if raw.strip() else "blank line"
            if is_tail:
                message = f"torn last line ({len(raw)} bytes without a newline, probably cut off by a crash): {message}"
            scan.problems.append(TraceProblem(number, message, torn=is_tail))
    return scan


def read_traces(path: str | Path, allow_torn_tail: bool = False) -> list[Trace]:
    """Return the traces of a file; raise `TraceFileError` naming each bad line.

    With `allow_torn_tail`, a torn last line is logged as a warning and left
    out; any other bad line still raises.
    """
    scan = scan_traces(path)
    problems = scan.problems
    if allow_torn_tail and scan.torn_tail is not None:
        logger.warning("%s: ignoring %s", scan.path, scan.torn_tail)
        problems = [p for p in problems if not p.torn]
    if problems:
        raise TraceFileError(scan.path, problems)
    return scan.traces


def repair_torn_tail(path: str | Path) -> int:
    """Make a trace file end with a complete line before appending to it; return the bytes removed.

    A last line without a newline is cut away when it does not parse, and
    given its newline when it does.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    start = data.rfind(b"\n") + 1
    try:
        parse_trace_line(data[start:].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        with open(path, "r+b") as handle:
            handle.truncate(start)
        logger.warning("%s: removed a torn last line of %d bytes", path, len(data) - start)
        return len(data) - start
    with open(path, "ab") as handle:
        handle.write(b"\n")
    return 0


__all__ = [
    "SCHEMA_VERSION", "Labels", "Sampling", "TextSegment", "ToolCallEvent", "Trace", "TraceFileError",
    "TraceProblem", "TraceScan", "TraceWriteError", "TraceWriter", "Usage", "read_traces", "repair_torn_tail",
    "scan_traces",
]
