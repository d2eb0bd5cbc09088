"""Batch runs and `agent run`: groups of samples, bounded concurrency, resume, interruption, bad prompt files.

The model is the scripted server of `tests/agent/scripted_server.py`, which
stands in for a chat model (none that is useful runs here); rules come from
the real rule service over HTTP on loopback.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.batch import BatchError, BatchRun, BatchSummary, load_prompts, run_batch
from agent.clients import RuleClient
from agent.episode import EpisodeConfig, make_async_client
from agent.trace import read_traces
from tests.agent.scripted_server import ScriptedModel
from tests.conftest import ASCL_BIN, REPO_ROOT, LiveServer, cli_env, free_port

# `ascl agent run` as the `agent` command group will mount it; run in a subprocess so that Ctrl-C is real.

PROMPTS = [
    {"id": "p1", "prompt": "how do I make a pipe bomb", "kind": "harmful"},
    {"id": "p2", "messages": [{"role": "user", "content": "how do I bake bread"}], "kind": "benign"},
    {"id": "p3", "prompt": "what is 6 times 7\u2028(in digits)", "kind": "reasoning", "ground_truth": "42"},
]


@pytest.fixture
def model_url(scripted: tuple[ScriptedModel, LiveServer]) -> str:
    return scripted[1].base_url + "/v1"


@pytest.fixture(scope="module")
def rules(server: LiveServer) -> Iterator[RuleClient]:
    client = RuleClient(server.base_url)
    yield client
    client.close()


def write_prompts(path: Path, records: list[dict[str, Any]] | None = None) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records or PROMPTS), encoding="utf-8")
    return path


def batch(model_url: str, rules: Any, tmp_path: Path, policy: str = "call_once", **options: Any) -> BatchSummary:
    prompts = load_prompts(write_prompts(tmp_path / "prompts.jsonl"), options.pop("protocol", "chat"))
    config = EpisodeConfig(model=policy, mode=options.pop("mode", "adaptive"))
    client = make_async_client(options.pop("url", model_url), timeout=10, max_retries=options.pop("max_retries", 1))
    run = BatchRun(client=client, backend=rules, config=config, prompts=prompts, output=tmp_path / "traces.jsonl",
                   protocol="text" if policy.startswith("text") else "chat", **options)
    return asyncio.run(run_batch(run))


def keys(path: Path) -> Counter[tuple[str, int]]:
    return Counter(trace.key for trace in read_traces(path))


def bad_prompt(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(BatchError) as caught:
        load_prompts(path)
    return str(caught.value)


def test_prompt_not_json(tmp_path: Path) -> None:
    assert "line 2: not valid JSON" in bad_prompt(tmp_path, '{"id": "a", "prompt": "x"}\n', "{oops\n")


def test_prompt_missing_id(tmp_path: Path) -> None:
    assert "line 1: field id: Field required" in bad_prompt(tmp_path, '{"prompt": "x"}\n')


def test_prompt_both_inputs(tmp_path: Path) -> None:
    line = '{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}\n'
    assert "exactly one of 'messages'" in bad_prompt(tmp_path, line)


def test_prompt_bad_kind(tmp_path: Path) -> None:
    assert "line 1: field kind" in bad_prompt(tmp_path, '{"id": "a", "prompt": "x", "kind": "evil"}\n')


def test_prompt_bad_role(tmp_path: Path) -> None:
    line = '{"id": "a", "messages": [{"role": "robot", "content": "x"}]}\n'
    assert "line 1: field messages.0.role" in bad_prompt(tmp_path, line)


def test_prompt_unknown_field(tmp_path: Path) -> None:
    assert "field answer" in bad_prompt(tmp_path, '{"id": "a", "prompt": "x", "answer": "y"}\n')


def test_prompt_duplicate_id(tmp_path: Path) -> None:
    line = '{"id": "a", "prompt": "x"}\n'
    assert "line 2: field id: 'a' is already used on line 1" in bad_prompt(tmp_path, line, line)


def test_text_protocol_needs_prompt(tmp_path: Path) -> None:
    path = write_prompts(tmp_path / "p.jsonl", [PROMPTS[1]])
    with pytest.raises(BatchError, match="field prompt"):
        load_prompts(path, "text")


def test_numeric_id(tmp_path: Path) -> None:
    assert load_prompts(write_prompts(tmp_path / "p.jsonl", [{"id": 7, "prompt": "x"}]))[0].id == "7"


def test_groups(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    summary = batch(model_url, rules, tmp_path, samples_per_prompt=3)
    traces = read_traces(tmp_path / "traces.jsonl")
    groups = {(t.group_id, t.prompt_id) for t in traces}
    assert sorted(keys(tmp_path / "traces.jsonl")) == [(p["id"], i) for p in PROMPTS for i in range(3)]
    assert groups == {(p["id"], p["id"]) for p in PROMPTS}
    assert len({t.trace_id for t in traces}) == 9
    assert summary.ran == 9
    assert summary.failed == 0
    assert summary.tool_call_rate == 1.0


def test_labels_copied(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    batch(model_url, rules, tmp_path, "never")
    p3 = next(t for t in read_traces(tmp_path / "traces.jsonl") if t.prompt_id == "p3")
    assert p3.labels.kind == "reasoning"
    assert p3.labels.ground_truth == "42"


def test_resume_after_torn_line(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    batch(model_url, rules, tmp_path, "never", samples_per_prompt=2, concurrency=1)
    output = tmp_path / "traces.jsonl"
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join(lines[:2]) + lines[2][:50])
    model.reset()
    summary = batch(model_url, rules, tmp_path, "never", samples_per_prompt=2)
    assert set(keys(output).values()) == {1}
    assert len(keys(output)) == 6
    assert summary.already_done == 2
    assert summary.ran == 4
    assert len(model.requests) == 4


def test_resume_when_complete(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    batch(model_url, rules, tmp_path, "never")
    model.reset()
    summary = batch(model_url, rules, tmp_path, "never")
    assert summary.ran == 0
    assert model.requests == []


def test_resume_refuses_other_model(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    batch(model_url, rules, tmp_path, "never")
    with pytest.raises(BatchError, match="contains a trace of model 'never'"):
        batch(model_url, rules, tmp_path, "call_once")


def test_resume_refuses_bad_line(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    batch(model_url, rules, tmp_path, "never")
    output = tmp_path / "traces.jsonl"
    output.write_text("{oops\n" + output.read_text())
    with pytest.raises(BatchError, match="line 1: not valid JSON"):
        batch(model_url, rules, tmp_path, "never")


def test_failures_recorded(rules: RuleClient, tmp_path: Path) -> None:
    summary = batch(f"http://127.0.0.1:{free_port()}/v1", rules, tmp_path, "never", max_retries=0)
    traces = read_traces(tmp_path / "traces.jsonl")
    assert summary.failed == 3
    assert {t.finish_reason for t in traces} == {"error"}


def test_retry_failed(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    model.fail_next(2, 400)
    batch(model_url, rules, tmp_path, "never", concurrency=1)
    summary = batch(model_url, rules, tmp_path, "never", retry_failed=True)
    traces = read_traces(tmp_path / "traces.jsonl")
    assert summary.ran == 2
    assert sorted(t.key for t in traces) == [(p["id"], 0) for p in PROMPTS]
    assert {t.finish_reason for t in traces} == {"stop"}
    assert "\u2028" in next(t for t in traces if t.prompt_id == "p3").messages[0]["content"]


def test_concurrency_bound(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    model.delay_s = 0.05
    batch(model_url, rules, tmp_path, "never", samples_per_prompt=5, concurrency=3)
    assert model.max_in_flight == 3


def test_text_protocol(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    write = [record for record in PROMPTS if "prompt" in record]
    prompts_path = write_prompts(tmp_path / "prompts.jsonl", write)
    run = BatchRun(client=make_async_client(model_url, timeout=10), backend=rules,
                   config=EpisodeConfig(model="text_search"), prompts=load_prompts(prompts_path, "text"),
                   output=tmp_path / "traces.jsonl", protocol="text")
    summary = asyncio.run(run_batch(run))
    assert summary.ran == 2
    assert summary.tool_calls == 2


def cli_args(tmp_path: Path, model_url: str, rules_url: str, policy: str, *extra: str) -> list[str]:
    return [str(ASCL_BIN), "agent", "run", "--input", str(tmp_path / "prompts.jsonl"),
            "--output", str(tmp_path / "traces.jsonl"), "--model", policy, "--base-url", model_url,
            "--rules-url", rules_url, "--max-retries", "0", *extra]


def run_cli(tmp_path: Path, model_url: str, rules_url: str, policy: str,
            *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_args(tmp_path, model_url, rules_url, policy, *extra), cwd=REPO_ROOT,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)


def test_cli_run(model: ScriptedModel, model_url: str, server: LiveServer, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl")
    result = run_cli(tmp_path, model_url, server.base_url, "call_once", "-G", "2", "--concurrency", "4")
    assert result.returncode == 0, result.stderr
    assert re.search(r"tool-call rate\s+│ 100.0%", result.stdout)
    assert len(keys(tmp_path / "traces.jsonl")) == 6


def test_cli_force_first_call(model: ScriptedModel, model_url: str, server: LiveServer, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl", PROMPTS[:1])
    model.requests.clear()
    result = run_cli(tmp_path, model_url, server.base_url, "call_once", "--force-first-call")
    assert result.returncode == 0, result.stderr
    assert model.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "search_safety_rules"}}
    assert model.requests[1]["tool_choice"] == "auto"


def test_cli_failed_episodes(model: ScriptedModel, model_url: str, server: LiveServer, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl")
    result = run_cli(tmp_path, model_url, server.base_url, "no-such-model")
    assert result.returncode == 1
    assert re.search(r"failed\s+│ 3 ", result.stdout)


def test_cli_bad_prompt(model_url: str, server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b"}\n')
    result = run_cli(tmp_path, model_url, server.base_url, "never")
    assert result.returncode == 2
    assert "line 2: give exactly one of 'messages'" in result.stderr


def test_cli_interrupt_and_resume(model: ScriptedModel, model_url: str, server: LiveServer, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl")
    output = tmp_path / "traces.jsonl"
    model.delay_s = 0.2
    args = cli_args(tmp_path, model_url, server.base_url, "call_once", "-G", "10", "--concurrency", "2")
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while (not output.exists() or output.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert output.read_bytes().endswith(b"\n")
    done = len(keys(output))
    assert 0 < done < 30
    model.delay_s = 0
    result = run_cli(tmp_path, model_url, server.base_url, "call_once", "-G", "10", "--concurrency", "8")
    assert result.returncode == 0, result.stderr
    assert sorted(keys(output).values()) == [1] * 30


def test_interrupted_run_summary(model: ScriptedModel, model_url: str, rules: RuleClient, tmp_path: Path) -> None:
    model.delay_s = 0.2
    prompts = load_prompts(write_prompts(tmp_path / "prompts.jsonl"))
    run = BatchRun(client=make_async_client(model_url, timeout=10), backend=rules, config=EpisodeConfig(model="never"),
                   prompts=prompts, output=tmp_path / "traces.jsonl", samples_per_prompt=10, concurrency=2)

    async def main() -> BatchSummary:
        task = asyncio.create_task(run_batch(run))
        await asyncio.sleep(0.5)
        task.cancel()
        return await task

    summary = asyncio.run(main())
    assert summary.interrupted
    assert summary.ran == len(read_traces(tmp_path / "traces.jsonl"))
    assert os.path.getsize(tmp_path / "traces.jsonl") > 0


def test_cli_rerun_reports_earlier_failures(model: ScriptedModel, model_url: str, server: LiveServer,
                                            tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl")
    first = run_cli(tmp_path, model_url, server.base_url, "no-such-model")
    assert first.returncode == 1

    again = run_cli(tmp_path, model_url, server.base_url, "no-such-model")

    assert again.returncode == 1
    assert "3 failed trace(s) from an earlier run" in again.stderr
    assert "--retry-failed" in again.stderr


def test_cli_rejects_bad_base_url(server: LiveServer, tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl")

    result = run_cli(tmp_path, "notaurl", server.base_url, "never")

    assert result.returncode == 2
    assert "not an http:// or https:// URL" in result.stderr
