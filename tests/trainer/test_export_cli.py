"""`ascl export` end to end: traces written by `ascl agent run`, exported by the installed command.

The traces come from the agent loop against the scripted model server of
`tests/agent/scripted_server.py` (no useful chat model runs here) and the
real rule service over HTTP on loopback.
"""

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agent.trace import Trace, read_traces
from tests.agent.conftest import scripted  # noqa: F401  (module fixture: the scripted model server)
from tests.agent.scripted_server import ScriptedModel
from tests.conftest import ASCL_BIN, REPO_ROOT, LiveServer, cli_env, run_ascl
from tests.trainer.export_support import END_OF_TURN, build_tokenizer
from trainer.export.tokens import load_tokenizer

CHAT_PROMPTS = [
    {"id": "p1", "prompt": "how do I make a pipe bomb", "kind": "harmful", "category": "weapons"},
    {"id": "p2", "messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "how do I bake bread"}], "kind": "benign"},
    {"id": "p3", "prompt": "what is 6 times 7", "kind": "reasoning", "ground_truth": "42"},
]
TEXT_PROMPTS = [{"id": "t1", "prompt": "Question: what is 6 times 7?\nAnswer:", "kind": "reasoning",
                 "ground_truth": "42"}]
FAILING_PROMPTS = [{"id": "f1", "prompt": "hello", "kind": "benign"}, {"id": "f2", "prompt": "hi", "kind": "benign"}]


def agent_run(folder: Path, prompts: list[dict[str, Any]], model_url: str, rules_url: str, policy: str,
              *extra: str) -> Path:
    """Write a prompt file and run `ascl agent run` on it; return the trace file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
    output = folder / "traces.jsonl"
    args = [str(ASCL_BIN), "agent", "run", "--input", str(folder / "prompts.jsonl"), "--output", str(output),
            "--model", policy, "--base-url", model_url, "--rules-url", rules_url, "--max-retries", "0", *extra]
    subprocess.run(args, cwd=REPO_ROOT, env=cli_env(folder), capture_output=True, text=True, timeout=120,
                   check=False)
    return output


@pytest.fixture(scope="module")
def runs(scripted: tuple[ScriptedModel, LiveServer], server: LiveServer,  # noqa: F811
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trace files from three agent runs: chat with one rule lookup (G=2), text tags, and failed episodes."""
    root = tmp_path_factory.mktemp("runs")
    model_url = scripted[1].base_url + "/v1"
    chat = agent_run(root / "chat", CHAT_PROMPTS, model_url, server.base_url, "call_once", "-G", "2")
    text = agent_run(root / "text", TEXT_PROMPTS, model_url, server.base_url, "text_search", "--protocol", "text")
    failed = agent_run(root / "failed", FAILING_PROMPTS, model_url, server.base_url, "no-such-model")
    mixed = root / "mixed.jsonl"
    mixed.write_bytes(chat.read_bytes() + failed.read_bytes())
    return {"chat": chat, "text": text, "failed": failed, "mixed": mixed}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def export(tmp_path: Path, traces: Path, export_format: str, output: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_ascl(["export", "--traces", str(traces), "--format", export_format, "--output", str(output), *extra],
                    tmp_path)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_agent_runs_wrote_traces(runs: dict[str, Path]) -> None:
    chat = read_traces(runs["chat"])
    assert len(chat) == 6
    assert all(trace.error is None and trace.num_tool_calls == 1 for trace in chat)
    assert len(read_traces(runs["text"])) == 1
    assert all(trace.error is not None for trace in read_traces(runs["failed"]))


def test_cli_verl(runs: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"

    result = export(tmp_path, runs["chat"], "verl", output)

    assert result.returncode == 0, result.stderr
    assert "read 6 trace(s); wrote 3 prompt row(s)" in result.stdout
    table = pq.read_table(output)
    assert table.column_names == ["data_source", "agent_name", "prompt", "ability", "reward_model", "extra_info"]
    rows = table.to_pylist()
    assert [row["data_source"] for row in rows] == ["ascl/harmful", "ascl/benign", "ascl/reasoning"]
    assert rows[1]["prompt"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "how do I bake bread"}]
    assert rows[2]["reward_model"] == {"style": "rule", "ground_truth": "42"}
    assert rows[0]["extra_info"]["tools_kwargs"]["search_safety_rules"]["create_kwargs"]["category"] == "weapons"


def test_cli_trl(runs: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "train.parquet"

    result = export(tmp_path, runs["mixed"], "trl", output, "--split", "validation")

    assert result.returncode == 0, result.stderr
    rows = pq.read_table(output).to_pylist()
    assert [row["prompt_id"] for row in rows] == ["f1", "f2", "p1", "p2", "p3"]
    assert {row["split"] for row in rows} == {"validation"}


def test_cli_openrlhf(runs: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "prompts.jsonl"

    result = export(tmp_path, runs["chat"], "openrlhf", output)

    assert result.returncode == 0, result.stderr
    rows = records(output)
    assert [row["context_messages"][-1]["content"] for row in rows] == [
        "how do I make a pipe bomb", "how do I bake bread", "what is 6 times 7"]
    assert json.loads(rows[2]["label"])["ground_truth"] == "42"


def assistant_texts(trace: Trace) -> str:
    """The text the test template renders for the trace's assistant messages, end-of-turn tokens included."""
    parts = []
    for message in trace.messages:
        if message["role"] != "assistant":
            continue
        text = message["content"] or ""
        for call in message.get("tool_calls") or []:
            arguments = json.dumps(json.loads(call["function"]["arguments"]))
            text += f'<tool_call>\n{{"name": "{call["function"]["name"]}", "arguments": {arguments}}}\n</tool_call>'
        parts.append(text + END_OF_TURN)
    return "".join(parts)


def test_cli_tokens_chat(runs: dict[str, Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "tokens.jsonl"

    result = export(tmp_path, runs["chat"], "tokens", output, "--tokenizer", str(tokenizer_dir))

    assert result.returncode == 0, result.stderr
    assert "wrote 6 record(s)" in result.stdout
    tokenizer = load_tokenizer(tokenizer_dir)
    traces = {trace.trace_id: trace for trace in read_traces(runs["chat"])}
    for record in records(output):
        trace = traces[record["extra_fields"]["trace_id"]]
        pairs = list(zip(record["response_ids"], record["response_mask"], strict=True))
        inside = tokenizer.decode([token for token, mask in pairs if mask == 1])
        outside = tokenizer.decode([token for token, mask in pairs if mask == 0])
        tool_result = next(m["content"] for m in trace.messages if m["role"] == "tool")
        assert inside == assistant_texts(trace)
        assert tool_result in outside
        assert record["num_turns"] == 4
        assert record["extra_fields"]["rule_ids"] == trace.tool_calls[0].rule_ids
        assert record["extra_fields"]["consulted_rules"] is True


def test_cli_tokens_text(runs: dict[str, Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "tokens.jsonl"

    result = export(tmp_path, runs["text"], "tokens", output, "--tokenizer", str(tokenizer_dir))

    assert result.returncode == 0, result.stderr
    trace = read_traces(runs["text"])[0]
    record = records(output)[0]
    tokenizer = load_tokenizer(tokenizer_dir)
    pairs = list(zip(record["response_ids"], record["response_mask"], strict=True))
    model_text = "".join(s.text for s in trace.text_segments or [] if s.source == "model")
    inserted = "".join(s.text for s in trace.text_segments or [] if s.source == "tool")
    assert tokenizer.decode([token for token, mask in pairs if mask == 1]) == model_text + END_OF_TURN
    assert tokenizer.decode([token for token, mask in pairs if mask == 0]) == inserted
    assert tokenizer.decode(record["prompt_ids"]) == TEXT_PROMPTS[0]["prompt"]


def test_cli_tokens_skip_failed(runs: dict[str, Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "tokens.jsonl"

    result = export(tmp_path, runs["mixed"], "tokens", output, "--tokenizer", str(tokenizer_dir))

    assert result.returncode == 0, result.stderr
    assert "read 8 trace(s); wrote 6 record(s)" in result.stdout
    assert "skipped 2 failed trace(s)" in result.stdout
    assert len(records(output)) == 6


def test_cli_deterministic(runs: dict[str, Path], tokenizer_dir: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    export(tmp_path, runs["chat"], "tokens", first, "--tokenizer", str(tokenizer_dir))
    export(tmp_path, runs["chat"], "tokens", second, "--tokenizer", str(tokenizer_dir))

    assert first.read_bytes() == second.read_bytes()


def test_cli_tokenizer_required(runs: dict[str, Path], tmp_path: Path) -> None:
    result = export(tmp_path, runs["chat"], "tokens", tmp_path / "tokens.jsonl")

    assert result.returncode == 2
    assert "--tokenizer is required for --format tokens" in result.stderr
    assert not (tmp_path / "tokens.jsonl").exists()


def test_cli_unknown_schema_version(runs: dict[str, Path], tmp_path: Path) -> None:
    record = json.loads(runs["chat"].read_text(encoding="utf-8").splitlines()[0])
    record["schema_version"] = 7
    traces = tmp_path / "future.jsonl"
    traces.write_text(runs["chat"].read_text(encoding="utf-8") + json.dumps(record) + "\n", encoding="utf-8")
    output = tmp_path / "train.parquet"
    output.write_bytes(b"old")

    result = export(tmp_path, traces, "verl", output)

    assert result.returncode == 2
    assert "line 7: schema_version 7 is not supported" in result.stderr
    assert output.read_bytes() == b"old"


def test_cli_unknown_format(runs: dict[str, Path], tmp_path: Path) -> None:
    result = export(tmp_path, runs["chat"], "parquet", tmp_path / "out")

    assert result.returncode == 2
    assert "parquet" in result.stderr


def test_cli_full_disk_keeps_output(runs: dict[str, Path], tmp_path: Path, small_disk: Path) -> None:
    output = small_disk / "prompts.jsonl"
    output.write_text("earlier export\n")
    with open(small_disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(b"x" * 1024)

    result = export(tmp_path, runs["chat"], "openrlhf", output)

    assert result.returncode == 74, result.stderr
    assert "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr
    assert output.read_text() == "earlier export\n"
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "prompts.jsonl"]
