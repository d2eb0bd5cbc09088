"""Hypothesis fuzzing of the trace reader: any file content gives problems, never another exception.

`scan_traces` turns every bad line into a `TraceProblem`, `read_traces`
raises only `TraceFileError`, and `parse_trace_line` raises only
`ValueError`. Files are random bytes, random lines, JSON values of any
shape, valid traces with one field replaced, deep nesting and huge lines.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.trace import Trace, TraceFileError, parse_trace_line, read_traces, scan_traces
from tests.agent.test_trace import make_trace

MAX_EXAMPLES = 200
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ODD_TEXT = st.text(max_size=100) | st.sampled_from([
    "\x00", "\ufeff", "\u2028", "\u202e", "\U0001f600", "\r", "\x1b[31m", "\\ud800", "NaN", "Infinity", "1e999",
])
HUGE_TEXT = st.integers(min_value=10_000, max_value=200_000).map(lambda size: "x" * size)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ODD_TEXT | HUGE_TEXT
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ODD_TEXT, children, max_size=4),
    max_leaves=12,
)
VALID_LINE = make_trace().model_dump_json()
FIELDS = list(Trace.model_fields)
DEEP_LINE = st.builds(lambda opener, depth: opener * depth, st.sampled_from(["[", '{"a":', '{"messages":[']),
                      st.integers(1, 100_000))
LINE = (
    st.just(VALID_LINE)
    | st.text(max_size=300)
    | VALUES.map(lambda value: json.dumps(value, ensure_ascii=False))
    | st.tuples(st.sampled_from(FIELDS), VALUES).map(lambda pair: _replace_field(*pair))
    | DEEP_LINE
    | st.integers(0, len(VALID_LINE)).map(lambda end: VALID_LINE[:end])
)


def _replace_field(field: str, value: Any) -> str:
    """A valid trace line with `field` set to `value`."""
    data = json.loads(VALID_LINE)
    data[field] = value
    return json.dumps(data, ensure_ascii=False)


def _scan(content: bytes) -> None:
    """Scan and read `content` as a trace file; fail on any exception but the documented ones."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "traces.jsonl"
        path.write_bytes(content)
        scan = scan_traces(path)
        try:
            traces = read_traces(path, allow_torn_tail=True)
        except TraceFileError as exc:
            assert exc.problems
            return
    assert len(traces) == len(scan.traces)


@FUZZ
@given(content=st.binary(max_size=4000))
def test_random_bytes(content: bytes) -> None:
    _scan(content)


@FUZZ
@given(lines=st.lists(LINE, max_size=5), newline_at_end=st.booleans())
def test_random_lines(lines: list[str], newline_at_end: bool) -> None:
    text = "\n".join(lines) + ("\n" if newline_at_end else "")
    _scan(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(line=LINE)
def test_parse_line_value_error(line: str) -> None:
    try:
        parse_trace_line(line)
    except ValueError as exc:
        assert str(exc)


def test_deep_line_problem(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text("[" * 100_000 + "\n", encoding="utf-8")
    problems = scan_traces(path).problems
    assert [str(problem) for problem in problems] == ["line 1: not valid JSON (arrays or objects nested too deeply)"]


def test_valid_line_read(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text(VALID_LINE + "\n", encoding="utf-8")
    assert len(read_traces(path)) == 1
