"""From agent traces to training data: `ascl agent run`, then `ascl score`, then `ascl export` in every format.

The policy and the judge are the scripted OpenAI-compatible server (no chat
model that could play either runs on this machine); the rules come from the
real rule service over HTTP, and the tokenizer is built locally.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agent.trace import read_traces
from tests.conftest import LiveServer, run_ascl
from tests.trainer.export_support import build_tokenizer
from tests.trainer.rewards_support import scripted_judge_server
from tests.trainer.test_export_cli import CHAT_PROMPTS, agent_run

SAMPLES = 2


@pytest.fixture(scope="module")
def judge_server() -> Iterator[LiveServer]:
    with scripted_judge_server() as (_, live):
        yield live


@pytest.fixture(scope="module")
def scored(judge_server: LiveServer, server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    model_url = f"{judge_server.base_url}/v1"
    traces = agent_run(root / "run", CHAT_PROMPTS, model_url, server.base_url, "call_once", "-G", str(SAMPLES))
    output = root / "scored.jsonl"

    result = run_ascl(["score", "--traces", str(traces), "--output", str(output), "--judge-base-url", model_url,
                       "--judge-model", "judge", "--cache", str(root / "verdicts.jsonl")], root)

    assert result.returncode == 0, result.stderr
    return output


def test_every_trace_scored(scored: Path):
    traces = read_traces(scored)

    assert len(traces) == len(CHAT_PROMPTS) * SAMPLES
    assert all(trace.rewards is not None and "total" in trace.rewards for trace in traces)
    assert {trace.labels.kind for trace in traces} == {"harmful", "benign", "reasoning"}
    assert all(trace.consulted_rules for trace in traces)


@pytest.mark.parametrize("export_format", ["verl", "trl", "openrlhf"])
def test_prompt_formats_export(scored: Path, tmp_path: Path, export_format: str):
    output = tmp_path / ("prompts.jsonl" if export_format == "openrlhf" else "prompts.parquet")

    result = run_ascl(["export", "--traces", str(scored), "--format", export_format, "--output", str(output)], tmp_path)

    assert result.returncode == 0, result.stderr
    if export_format == "openrlhf":
        rows = [json.loads(line) for line in output.read_text().splitlines()]
    else:
        rows = pq.read_table(output).to_pylist()
    assert len(rows) == len(CHAT_PROMPTS)


def test_token_records_carry_rewards(scored: Path, tmp_path: Path):
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    output = tmp_path / "tokens.jsonl"

    result = run_ascl(["export", "--traces", str(scored), "--format", "tokens", "--output", str(output),
                       "--tokenizer", str(tokenizer)], tmp_path)

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    totals = sorted(trace.rewards["total"] for trace in read_traces(scored))
    assert sorted(record["reward_score"] for record in records) == totals
    assert all(record["extra_fields"]["num_tool_calls"] == 1 for record in records)
    assert all(0 in record["response_mask"] and 1 in record["response_mask"] for record in records)
