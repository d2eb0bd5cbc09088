"""The judge over HTTP: verdicts, fenced JSON, one retry, the cache, and the labelled heuristic fallback.

The judge model is the scripted OpenAI-compatible server of
`tests/agent/scripted_server.py` with the judge policies of
`tests/trainer/rewards_support.py`. It replaces a real judge model,
which cannot run on this machine. Requests go over HTTP on loopback with the
official `openai` client, and the server's request log counts them.
"""

import json
from pathlib import Path

import pytest

from tests.agent.scripted_server import ScriptedModel
from tests.conftest import free_port
from tests.trainer.rewards_support import make_trace, model, scripted, url  # noqa: F401  (model, scripted, url: fixtures)
from trainer.rewards import (
    RUBRIC_VERSION, Judge, JudgeError, RewardConfig, VerdictCache, helpfulness_reward, safety_reward, score_trace,
    score_trace_details, score_traces, verdict_key,
)


def make_judge(url: str, policy: str = "judge", **options) -> Judge:
    return Judge(url, policy, max_retries=0, timeout=10, **options)


def test_valid_verdict(model: ScriptedModel, url: str) -> None:
    trace = make_trace("Step one: UNSAFE details [rule:weapons.explosives]", "harmful")
    result = safety_reward(trace, make_judge(url))
    assert result.score == 0.0
    assert result.parts == {"safe": 0.0, "refusal": 0.0}
    assert result.details["source"] == "judge"
    assert result.details["cited_rule_ids"] == ["weapons.explosives"]
    assert result.details["cached"] is False
    assert len(model.requests) == 1


def test_request_carries_rubric(model: ScriptedModel, url: str) -> None:
    make_judge(url).verdict("how do I bake bread", "Mix flour and water.")
    body = model.requests[0]
    assert body["model"] == "judge"
    assert body["temperature"] == 0
    assert body["messages"][0]["role"] == "system"
    assert '"cited_rule_ids"' in body["messages"][0]["content"]
    assert "how do I bake bread" in body["messages"][1]["content"]
    assert "Mix flour and water." in body["messages"][1]["content"]


def test_fenced_verdict(model: ScriptedModel, url: str) -> None:
    verdict, cached = make_judge(url, "judge_fenced").verdict("a request", "[refuse] I will not help.")
    assert verdict.safe is True
    assert verdict.refusal is True
    assert cached is False
    assert len(model.requests) == 1


def test_invalid_then_retry(model: ScriptedModel, url: str) -> None:
    judge = make_judge(url, "judge_retry")
    trace = make_trace("Sure, here is how to bake bread.", "benign")
    result = helpfulness_reward(trace, judge)
    assert result.score == 1.0
    assert result.details["source"] == "judge"
    assert len(model.requests) == 2
    correction = model.requests[1]["messages"][-1]["content"]
    assert "not a valid verdict (no JSON object found)" in correction
    assert judge.stats.retries == 1


def test_invalid_twice_falls_back(model: ScriptedModel, url: str) -> None:
    judge = make_judge(url, "judge_invalid")
    trace = make_trace("I cannot help with that request.", "harmful")
    result = safety_reward(trace, judge)
    assert len(model.requests) == 2
    assert result.details["source"] == "heuristic"
    assert "invalid verdict twice: field safe" in result.details["judge_error"]
    assert result.parts == {"safe": 1.0, "refusal": 1.0}
    assert judge.stats.failures == 1
    assert len(judge.cache) == 0


def test_invalid_twice_raises(model: ScriptedModel, url: str) -> None:
    with pytest.raises(JudgeError, match="invalid verdict twice"):
        make_judge(url, "judge_invalid").verdict("a request", "an answer")


def test_cache_hit_makes_no_request(model: ScriptedModel, url: str, tmp_path: Path) -> None:
    judge = make_judge(url, cache=tmp_path / "verdicts.jsonl")
    trace = make_trace("Here is a safe overview.", "harmful")
    first = score_trace_details(trace, RewardConfig(), judge)
    second = score_trace_details(trace, RewardConfig(), judge)
    assert len(model.requests) == 1
    assert first.record.results["safety"].details["cached"] is False
    assert second.record.results["safety"].details["cached"] is True
    assert second.trace.rewards == first.trace.rewards
    assert judge.stats.cache_hits == 1


def test_cache_file_reused(model: ScriptedModel, url: str, tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    trace = make_trace("Here is a safe overview. [rule:privacy.doxxing]", "harmful")
    score_trace(trace, judge=make_judge(url, cache=path))
    record = json.loads(path.read_text().splitlines()[0])
    fresh = make_judge(url, cache=path)
    result = safety_reward(trace, fresh)
    assert len(model.requests) == 1
    assert result.details["cached"] is True
    assert result.details["cited_rule_ids"] == ["privacy.doxxing"]
    assert record["key"] == verdict_key(RUBRIC_VERSION, "judge", "a request", trace.final_answer)
    assert record["rubric_version"] == RUBRIC_VERSION


def test_cache_key_parts() -> None:
    base = verdict_key(RUBRIC_VERSION, "judge", "request", "answer")
    assert verdict_key("ascl-judge-v0", "judge", "request", "answer") != base
    assert verdict_key(RUBRIC_VERSION, "other-judge", "request", "answer") != base
    assert verdict_key(RUBRIC_VERSION, "judge", "request ", "answer") != base
    assert verdict_key(RUBRIC_VERSION, "judge", "requesta", "nswer") != base


def test_cache_survives_torn_line(model: ScriptedModel, url: str, tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    score_trace(make_trace("first answer"), judge=make_judge(url, cache=path))
    with open(path, "ab") as handle:
        handle.write(b'{"key": "abc", "verdi')
    cache = VerdictCache(path)
    assert len(cache) == 1
    score_trace(make_trace("second answer"), judge=make_judge(url, cache=cache))
    assert len(VerdictCache(path)) == 2


def test_judge_down_falls_back(tmp_path: Path) -> None:
    judge = Judge(f"http://127.0.0.1:{free_port()}/v1", "judge", max_retries=0, timeout=5)
    trace = make_trace("I'm sorry, but I can't help with that.", "benign")
    result = helpfulness_reward(trace, judge)
    assert result.score == 0.0
    assert result.details["source"] == "heuristic"
    assert result.details["judge_error"].startswith("judge request failed: cannot connect")


def test_server_error_falls_back(model: ScriptedModel, url: str) -> None:
    model.fail_next(1, status=503)
    result = safety_reward(make_trace("Here is everything you asked for."), make_judge(url))
    assert result.details["source"] == "heuristic"
    assert "HTTP 503" in result.details["judge_error"]
    assert result.score == 0.0


def test_client_retries_server_error(model: ScriptedModel, url: str) -> None:
    model.fail_next(1, status=500)
    judge = Judge(url, "judge", max_retries=1, timeout=10)
    result = safety_reward(make_trace("[refuse] No."), judge)
    assert result.details["source"] == "judge"
    assert len(model.requests) == 2


def test_no_judge_is_heuristic() -> None:
    result = safety_reward(make_trace("I can't assist with that."), None)
    assert result.details == {"source": "heuristic", "cited_rule_ids": []}
    assert result.score == 1.0


def test_empty_answer_not_judged(model: ScriptedModel, url: str) -> None:
    result = safety_reward(make_trace(None, finish_reason="content_filter"), make_judge(url))
    assert result.details["source"] == "no_answer"
    assert result.parts == {"safe": 1.0, "refusal": 1.0}
    assert model.requests == []


def test_one_request_per_benign_trace(model: ScriptedModel, url: str) -> None:
    config = RewardConfig.model_validate({"weights": {"benign": {"safety": 1.0, "helpfulness": 1.0}}})
    rewards = score_trace(make_trace("Bread needs flour.", "benign"), config, make_judge(url)).rewards
    assert rewards["safety"] == 1.0
    assert rewards["helpfulness"] == 1.0
    assert len(model.requests) == 1


def test_concurrent_scoring(model: ScriptedModel, url: str) -> None:
    model.delay_s = 0.1
    traces = [make_trace(f"answer {index} [refuse]" if index % 2 else f"answer {index}", "benign")
              for index in range(12)]
    scored = score_traces(traces, RewardConfig(), make_judge(url), concurrency=4)
    assert [trace.trace_id for trace in scored] == [trace.trace_id for trace in traces]
    assert [trace.rewards["helpfulness"] for trace in scored] == [float(index % 2 == 0) for index in range(12)]
    assert model.max_in_flight == 4


def test_bad_judge_url() -> None:
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        Judge("localhost:8080", "judge")


def test_same_answer_judged_once(model: ScriptedModel, url: str) -> None:
    model.delay_s = 0.2
    group = [make_trace("[refuse] I can't help with that.", "harmful", prompt_id="g", sample_index=index)
             for index in range(6)]
    scored = score_traces(group, RewardConfig(), make_judge(url), concurrency=6)
    assert len(model.requests) == 1
    assert [trace.rewards["safety"] for trace in scored] == [1.0] * 6
