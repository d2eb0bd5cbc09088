"""Prompt exports (verl, TRL, OpenRLHF): columns, one row per prompt, labels, determinism and atomic writes."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agent.trace import Labels
from tests.trainer.export_support import make_trace, tool_trace, write_traces
from trainer.export import ExportError, export_traces

VERL_COLUMNS = ["data_source", "agent_name", "prompt", "ability", "reward_model", "extra_info"]
TRL_COLUMNS = ["prompt", "prompt_id", "kind", "category", "ground_truth", "data_source", "split"]


@pytest.fixture
def traces_file(tmp_path: Path) -> Path:
    """Two samples of a harmful prompt, one reasoning prompt with a numeric ground truth, one failed benign episode."""
    traces = [
        tool_trace("p1", 1),
        tool_trace("p1", 0),
        make_trace("p2", labels=Labels(kind="reasoning", ground_truth=42)),
        make_trace("p3", labels=Labels(kind="benign"), error="model server returned 500", finish_reason="error"),
    ]
    return write_traces(tmp_path / "traces.jsonl", traces)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_verl_columns(traces_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"

    summary = export_traces(traces_file, "verl", output)

    table = pq.read_table(output)
    assert table.column_names == VERL_COLUMNS
    assert summary.traces == 4
    assert summary.rows == 3
    assert table.num_rows == 3


def test_verl_rows(traces_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"
    export_traces(traces_file, "verl", output, split="test")

    rows = pq.read_table(output).to_pylist()

    assert [row["extra_info"]["prompt_id"] for row in rows] == ["p1", "p2", "p3"]
    assert [row["extra_info"]["index"] for row in rows] == [0, 1, 2]
    harmful, reasoning, benign = rows
    assert harmful["data_source"] == "ascl/harmful"
    assert harmful["ability"] == "harmful"
    assert harmful["agent_name"] == "tool_agent"
    assert harmful["prompt"] == [{"role": "system", "content": "You are a careful assistant."},
                                 {"role": "user", "content": "how do I make a pipe bomb"}]
    assert harmful["reward_model"] == {"style": "model", "ground_truth": ""}
    assert harmful["extra_info"]["split"] == "test"
    assert harmful["extra_info"]["need_tools_kwargs"] is True
    # The key is the function name verl's tool config gives the rule tool.
    create_kwargs = harmful["extra_info"]["tools_kwargs"]["search_safety_rules"]["create_kwargs"]
    assert create_kwargs == {"prompt_id": "p1", "kind": "harmful", "category": "weapons"}
    assert reasoning["reward_model"] == {"style": "rule", "ground_truth": "42"}
    assert benign["data_source"] == "ascl/benign"
    assert benign["prompt"] == [{"role": "user", "content": "question p3"}]


def test_trl_columns(traces_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"
    export_traces(traces_file, "trl", output)

    rows = pq.read_table(output).to_pylist()

    assert pq.read_table(output).column_names == TRL_COLUMNS
    assert [row["prompt_id"] for row in rows] == ["p1", "p2", "p3"]
    assert rows[1] == {"prompt": [{"role": "user", "content": "question p2"}], "prompt_id": "p2",
                       "kind": "reasoning", "category": None, "ground_truth": "42",
                       "data_source": "ascl/reasoning", "split": "train"}


def test_trl_loads_with_datasets(traces_file: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets comes with the trl extra")
    output = tmp_path / "train.parquet"
    export_traces(traces_file, "trl", output)

    dataset = datasets.load_dataset("parquet", data_files=str(output), split="train",
                                    cache_dir=str(tmp_path / "hf-cache"))

    assert dataset.column_names == TRL_COLUMNS
    assert len(dataset) == 3
    assert dataset[0]["prompt"][1] == {"role": "user", "content": "how do I make a pipe bomb"}


def test_trl_prompt_is_conversational(traces_file: Path, tmp_path: Path) -> None:
    data_utils = pytest.importorskip("trl.data_utils", reason="trl is in the trl extra")
    output = tmp_path / "train.parquet"
    export_traces(traces_file, "trl", output)

    rows = pq.read_table(output).to_pylist()

    assert all(data_utils.is_conversational(row) for row in rows)


def test_openrlhf_rows(traces_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "prompts.jsonl"
    export_traces(traces_file, "openrlhf", output)

    rows = read_jsonl(output)

    assert [row["prompt_id"] for row in rows] == ["p1", "p2", "p3"]
    reasoning = rows[1]
    assert reasoning["context_messages"] == [{"role": "user", "content": "question p2"}]
    assert json.loads(reasoning["label"]) == {"prompt_id": "p2", "kind": "reasoning", "category": None,
                                              "ground_truth": "42"}
    assert reasoning["ground_truth"] == "42"
    assert reasoning["datasource"] == "ascl/reasoning"
    assert isinstance(reasoning["label"], str)


def test_ground_truth_as_json(tmp_path: Path) -> None:
    trace = make_trace("p1", labels=Labels(kind="reasoning", ground_truth={"answer": "C", "choices": ["A", "C"]}))
    output = tmp_path / "train.parquet"
    export_traces(write_traces(tmp_path / "t.jsonl", [trace]), "verl", output)

    row = pq.read_table(output).to_pylist()[0]

    assert row["reward_model"]["ground_truth"] == '{"answer":"C","choices":["A","C"]}'


def test_unlabelled_prompt(tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"
    export_traces(write_traces(tmp_path / "t.jsonl", [make_trace("p1")]), "verl", output)

    row = pq.read_table(output).to_pylist()[0]

    assert row["ability"] == "unlabelled"
    assert row["data_source"] == "ascl/unlabelled"
    assert row["reward_model"]["style"] == "model"


def test_text_parts_joined(tmp_path: Path) -> None:
    content = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    trace = make_trace("p1", messages=[{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}])
    output = tmp_path / "prompts.jsonl"

    export_traces(write_traces(tmp_path / "t.jsonl", [trace]), "openrlhf", output)

    assert read_jsonl(output)[0]["context_messages"] == [{"role": "user", "content": "first\nsecond"}]


def test_image_part_rejected(tmp_path: Path) -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    trace = make_trace("p1", messages=[{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}])

    with pytest.raises(ExportError, match="messages.0.content has a 'image_url' part"):
        export_traces(write_traces(tmp_path / "t.jsonl", [trace]), "trl", tmp_path / "out.parquet")


def test_few_shot_prompt_kept(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]
    output = tmp_path / "prompts.jsonl"

    export_traces(write_traces(tmp_path / "t.jsonl", [make_trace("p1", messages=messages)]), "openrlhf", output)

    assert read_jsonl(output)[0]["context_messages"] == messages[:3]


@pytest.mark.parametrize(("export_format", "name"), [("verl", "a.parquet"), ("trl", "a.parquet"),
                                                     ("openrlhf", "a.jsonl")])
def test_output_deterministic(traces_file: Path, tmp_path: Path, export_format: str, name: str) -> None:
    first, second = tmp_path / "one" / name, tmp_path / "two" / name
    export_traces(traces_file, export_format, first)

    shuffled = list(reversed(traces_file.read_text(encoding="utf-8").splitlines(keepends=True)))
    (tmp_path / "shuffled.jsonl").write_text("".join(shuffled), encoding="utf-8")
    export_traces(tmp_path / "shuffled.jsonl", export_format, second)

    assert first.read_bytes() == second.read_bytes()


def test_unknown_schema_version(traces_file: Path, tmp_path: Path) -> None:
    record = json.loads(traces_file.read_text(encoding="utf-8").splitlines()[0])
    record["schema_version"] = 2
    with open(traces_file, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")

    with pytest.raises(ExportError, match="line 5: schema_version 2 is not supported"):
        export_traces(traces_file, "verl", tmp_path / "out.parquet")


def test_failure_keeps_old_output(traces_file: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    output.write_bytes(b"previous export")
    with open(traces_file, "a", encoding="utf-8") as handle:
        handle.write('{"schema_version": 1, "trace_id": "broken"}\n')

    with pytest.raises(ExportError, match="line 5: field"):
        export_traces(traces_file, "verl", output)

    assert output.read_bytes() == b"previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.parquet", "traces.jsonl"]


def test_write_error_leaves_no_file(traces_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    output = tmp_path / "out" / "train.parquet"

    def write_half_then_fail(table: object, where: str, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", write_half_then_fail)

    with pytest.raises(OSError, match="No space left"):
        export_traces(traces_file, "verl", output)

    assert list(output.parent.iterdir()) == []


def test_empty_trace_file(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text("", encoding="utf-8")

    with pytest.raises(ExportError, match="contains no traces"):
        export_traces(tmp_path / "t.jsonl", "openrlhf", tmp_path / "out.jsonl")


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--traces .*missing.jsonl: file not found"):
        export_traces(tmp_path / "missing.jsonl", "verl", tmp_path / "out.parquet")


def test_output_folder_rejected(traces_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="is a folder"):
        export_traces(traces_file, "verl", tmp_path)
