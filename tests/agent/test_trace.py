"""The trace schema, the line writer and the reader that reports bad and torn lines."""

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agent.trace import (
    SCHEMA_VERSION, ToolCallEvent, Trace, TraceFileError, TraceWriter, read_traces, repair_torn_tail, scan_traces,
)


def make_trace(prompt_id: str = "p1", sample_index: int = 0, **fields: object) -> Trace:
    values: dict[str, object] = {
        "trace_id": f"t-{prompt_id}-{sample_index}", "prompt_id": prompt_id, "group_id": prompt_id,
        "sample_index": sample_index, "model": "m", "mode": "adaptive", "max_turns": 4,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "consulted_rules": False, "num_tool_calls": 0, "final_answer": "hello", "finish_reason": "stop",
        "started_at": datetime(2025, 1, 1, tzinfo=timezone.utc), "duration_ms": 12.5,
    }
    values.update(fields)
    return Trace.model_validate(values)


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def line_of(trace: Trace) -> str:
    return trace.model_dump_json() + "\n"


def test_round_trip(tmp_path: Path) -> None:
    event = ToolCallEvent(turn=0, tool_call_id="c1", name="search_safety_rules", arguments='{"query": "x"}',
                          query="x", rule_ids=["a.b"], scores=[0.5], latency_ms=3.0)
    trace = make_trace(tool_calls=[event], num_tool_calls=1, consulted_rules=True, rewards={"safety": 1.0})
    with TraceWriter(tmp_path / "t.jsonl") as writer:
        writer.write(trace)
    assert read_traces(tmp_path / "t.jsonl") == [trace]


def test_schema_version_written(tmp_path: Path) -> None:
    with TraceWriter(tmp_path / "t.jsonl") as writer:
        writer.write(make_trace())
    assert json.loads((tmp_path / "t.jsonl").read_text())["schema_version"] == SCHEMA_VERSION


def test_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    for index in range(2):
        with TraceWriter(path) as writer:
            writer.write(make_trace(sample_index=index))
    assert [t.sample_index for t in read_traces(path)] == [0, 1]


def test_lines_readable_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path)
    writer.write(make_trace())
    assert len(read_traces(path)) == 1
    writer.close()


def test_threads_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    big = "x" * 200_000
    with TraceWriter(path, fsync=True) as writer:
        threads = [threading.Thread(target=lambda i=i: writer.write(make_trace(f"p{i}", final_answer=big)))
                   for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(t.prompt_id for t in read_traces(path)) == [f"p{i}" for i in range(8)]


def test_bad_line_number(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", line_of(make_trace("a")), "{not json}\n", line_of(make_trace("b")))
    with pytest.raises(TraceFileError, match="line 2: not valid JSON"):
        read_traces(path)


def test_invalid_field_named(tmp_path: Path) -> None:
    data = json.loads(make_trace().model_dump_json())
    data["sample_index"] = -1
    path = write_lines(tmp_path / "t.jsonl", json.dumps(data) + "\n")
    with pytest.raises(TraceFileError, match="line 1: field sample_index"):
        read_traces(path)


def test_blank_line_reported(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", line_of(make_trace("a")), "\n", line_of(make_trace("b")))
    assert [str(p) for p in scan_traces(path).problems] == ["line 2: blank line"]


def test_torn_tail_reported(tmp_path: Path) -> None:
    whole = line_of(make_trace("a"))
    path = write_lines(tmp_path / "t.jsonl", whole, whole[:40])
    with pytest.raises(TraceFileError, match="line 2: torn last line"):
        read_traces(path)


def test_torn_tail_tolerated(tmp_path: Path) -> None:
    whole = line_of(make_trace("a"))
    path = write_lines(tmp_path / "t.jsonl", whole, whole[:40])
    assert [t.prompt_id for t in read_traces(path, allow_torn_tail=True)] == ["a"]


def test_torn_tail_flag_only_for_tail(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", "{oops\n", line_of(make_trace("a")))
    with pytest.raises(TraceFileError, match="line 1"):
        read_traces(path, allow_torn_tail=True)


def test_tail_without_newline_accepted(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", line_of(make_trace("a")).rstrip("\n"))
    assert scan_traces(path).problems == []


def test_unknown_schema_version(tmp_path: Path) -> None:
    data = json.loads(make_trace().model_dump_json())
    data["schema_version"] = 2
    path = write_lines(tmp_path / "t.jsonl", json.dumps(data) + "\n")
    with pytest.raises(TraceFileError, match="line 1: schema_version 2 is not supported"):
        read_traces(path)


def test_missing_schema_version(tmp_path: Path) -> None:
    data = json.loads(make_trace().model_dump_json())
    del data["schema_version"]
    path = write_lines(tmp_path / "t.jsonl", json.dumps(data) + "\n")
    with pytest.raises(TraceFileError, match="schema_version is missing"):
        read_traces(path)


def test_repair_cuts_torn_tail(tmp_path: Path) -> None:
    whole = line_of(make_trace("a"))
    path = write_lines(tmp_path / "t.jsonl", whole, whole[:40])
    assert repair_torn_tail(path) == 40
    assert path.read_text() == whole


def test_repair_completes_whole_tail(tmp_path: Path) -> None:
    whole = line_of(make_trace("a"))
    path = write_lines(tmp_path / "t.jsonl", whole.rstrip("\n"))
    repair_torn_tail(path)
    assert path.read_text() == whole


def test_repair_leaves_good_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", line_of(make_trace("a")))
    assert repair_torn_tail(path) == 0
