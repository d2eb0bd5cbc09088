"""The chat loop and the text-tag loop against a scripted model server and the real rule service over HTTP.

The model is `tests/agent/scripted_server.py`, which stands in for a chat
model (none that is useful runs here); the rules come from the real rule
service on loopback (the session `server` fixture) or in-process.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from agent.backend import LocalRuleClient
from agent.clients import RuleClient
from agent.episode import EpisodeConfig, make_async_client, make_client
from agent.loop import RULES_HEADER, arun_episode, run_episode
from agent.text_loop import TextTags, arun_text_episode, run_text_episode
from agent.trace import Sampling
from rule_service.tool import TOOL_NAME
from tests.agent.scripted_server import SECOND_QUERY, ScriptedModel
from tests.conftest import LiveServer, free_port

QUESTION = [{"role": "user", "content": "how do I make a pipe bomb"}]


@pytest.fixture
def chat(scripted: tuple[ScriptedModel, LiveServer]) -> Any:
    return make_client(scripted[1].base_url + "/v1", timeout=10, max_retries=2)


@pytest.fixture(scope="module")
def rules(server: LiveServer) -> Iterator[RuleClient]:
    client = RuleClient(server.base_url)
    yield client
    client.close()


def play(chat: Any, rules: Any, policy: str, messages: list[dict[str, Any]] | None = None, **config: Any):
    return run_episode(chat, rules, messages or QUESTION, EpisodeConfig(model=policy, **config))


def test_adaptive_call_then_answer(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "call_once")
    assert [m["role"] for m in trace.messages] == ["user", "assistant", "tool", "assistant"]
    assert trace.num_tool_calls == 1
    assert trace.tool_calls[0].query == "how do I make a pipe bomb"
    assert trace.tool_calls[0].rule_ids
    assert trace.messages[2]["content"].startswith(f"[{trace.tool_calls[0].rule_ids[0]}]")
    assert trace.consulted_rules
    assert trace.final_answer == "Final answer after reading 1 tool result(s)."
    assert trace.finish_reason == "stop"
    assert trace.index_version
    assert trace.error is None


def test_adaptive_offers_tool(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    play(chat, rules, "call_once")
    assert model.requests[0]["tools"][0]["function"]["name"] == TOOL_NAME
    assert model.requests[0]["tool_choice"] == "auto"


def test_usage_summed(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "call_once")
    assert trace.usage.requests == 2
    assert trace.usage.total_tokens == trace.usage.prompt_tokens + trace.usage.completion_tokens
    assert trace.usage.prompt_tokens > 0


def test_sampling_sent(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    play(chat, rules, "never", sampling=Sampling(temperature=0.7, max_tokens=64, seed=3))
    sent = model.requests[0]
    assert sent["temperature"] == 0.7
    assert sent["max_tokens"] == 64
    assert sent["seed"] == 3
    assert "top_p" not in sent


def test_never_mode(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "call_once", mode="never")
    assert "tools" not in model.requests[0]
    assert trace.num_tool_calls == 0
    assert not trace.consulted_rules
    assert trace.finish_reason == "stop"


def test_never_mode_needs_no_backend(model: ScriptedModel, chat: Any) -> None:
    trace = play(chat, None, "never", mode="never")
    assert trace.final_answer


def test_always_mode(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "call_once", mode="always")
    system = model.requests[0]["messages"][0]
    assert "tools" not in model.requests[0]
    assert system["role"] == "system"
    assert RULES_HEADER in system["content"]
    assert f"[{trace.tool_calls[0].rule_ids[0]}]" in system["content"]
    assert trace.tool_calls[0].origin == "preload"
    assert trace.num_tool_calls == 0
    assert trace.consulted_rules


def test_always_needs_user_text(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    messages = [{"role": "user", "content": "   "}]
    trace = play(chat, rules, "never", messages, mode="always")
    assert trace.finish_reason == "error"
    assert "always mode needs a user message" in trace.error
    assert trace.messages == messages
    assert model.requests == []


def test_system_prompts_merged(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    messages = [{"role": "system", "content": "Own prompt."}, *QUESTION]
    play(chat, rules, "never", messages, mode="always", system_prompt="Configured prompt.")
    system = model.requests[0]["messages"][0]["content"]
    assert system.startswith("Configured prompt.\n\nOwn prompt.\n\n" + RULES_HEADER)
    assert [m["role"] for m in model.requests[0]["messages"]] == ["system", "user"]


def test_parallel_calls(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "parallel")
    call_ids = [call["id"] for call in trace.messages[1]["tool_calls"]]
    assert [m.get("tool_call_id") for m in trace.messages[2:4]] == call_ids
    assert [event.query for event in trace.tool_calls] == ["how do I make a pipe bomb", SECOND_QUERY]
    assert trace.num_tool_calls == 2
    assert trace.finish_reason == "stop"


def test_broken_arguments(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "broken_args")
    event = trace.tool_calls[0]
    assert event.arguments == '{"query": "how to pick a lock'
    assert event.error.startswith("Error:")
    assert "not valid JSON" in trace.messages[2]["content"]
    assert event.query is None
    assert trace.finish_reason == "stop"


def test_unknown_tool(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "wrong_tool")
    assert "no tool named 'web_search'" in trace.tool_calls[0].error
    assert not trace.consulted_rules
    assert trace.finish_reason == "stop"


def test_max_turns(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "loop", max_turns=2)
    assert trace.num_tool_calls == 2
    assert trace.finish_reason == "tool_calls_limit"
    assert model.requests[-1]["tool_choice"] == "none"
    assert len(model.requests) == 3
    assert trace.final_answer == "Final answer after reading 2 tool result(s)."


def test_first_tool_choice(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    named = {"type": "function", "function": {"name": TOOL_NAME}}
    trace = play(chat, rules, "call_once", first_tool_choice=named)
    assert model.requests[0]["tool_choice"] == named
    assert model.requests[1]["tool_choice"] == "auto"
    assert trace.num_tool_calls == 1


def test_reasoning_kept(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "reasoning")
    assert trace.messages[1]["reasoning_content"] == "Thinking at step 0."
    assert trace.reasoning_content == "Thinking at step 1."
    assert trace.finish_reason == "stop"  # the server refuses reasoning_content in requests


def test_retry_on_500(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    model.fail_next(1, 500)
    trace = play(chat, rules, "never")
    assert trace.finish_reason == "stop"
    assert len(model.requests) == 2


def test_retry_on_429(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    model.fail_next(2, 429, retry_after_ms=10)
    trace = play(chat, rules, "call_once")
    assert trace.finish_reason == "stop"
    assert len(model.requests) == 4


def test_retries_exhausted(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    model.fail_next(3, 503, retry_after_ms=10)
    trace = play(chat, rules, "call_once")
    assert trace.finish_reason == "error"
    assert "HTTP 503" in trace.error
    assert trace.final_answer is None


def test_endpoint_down(rules: RuleClient) -> None:
    chat = make_client(f"http://127.0.0.1:{free_port()}/v1", timeout=5, max_retries=0)
    trace = play(chat, rules, "call_once")
    assert trace.finish_reason == "error"
    assert trace.error.startswith("connection error")


def test_timeout(model: ScriptedModel, scripted: tuple[ScriptedModel, LiveServer], rules: RuleClient) -> None:
    model.delay_s = 1.0
    chat = make_client(scripted[1].base_url + "/v1", timeout=0.2, max_retries=0)
    trace = play(chat, rules, "never")
    assert trace.error.startswith("time-out")


def test_content_filter_refusal(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    model.fail_next(1, 400, code="content_filter")
    trace = play(chat, rules, "never")
    assert trace.finish_reason == "error"
    assert trace.error.startswith("content_filter: HTTP 400")


def test_content_filter_finish(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "filtered")
    assert trace.finish_reason == "content_filter"
    assert trace.error is None


def test_length_finish(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    assert play(chat, rules, "length").finish_reason == "length"


def test_unknown_model(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = play(chat, rules, "no-such-model")
    assert "HTTP 404" in trace.error


def test_rule_service_down(model: ScriptedModel, chat: Any) -> None:
    down = RuleClient(f"http://127.0.0.1:{free_port()}", max_attempts=1)
    trace = play(chat, down, "call_once")
    assert trace.finish_reason == "error"
    assert "RuleServiceUnavailable" in trace.error


def test_async_parallel(model: ScriptedModel, scripted: tuple[ScriptedModel, LiveServer], bundled_service: Any) -> None:
    chat = make_async_client(scripted[1].base_url + "/v1", timeout=10, max_retries=1)
    trace = asyncio.run(arun_episode(chat, LocalRuleClient(bundled_service), QUESTION, EpisodeConfig(model="parallel")))
    assert trace.num_tool_calls == 2
    assert all(event.rule_ids for event in trace.tool_calls)
    assert trace.finish_reason == "stop"


def test_async_failure(rules: RuleClient) -> None:
    chat = make_async_client(f"http://127.0.0.1:{free_port()}/v1", timeout=5, max_retries=0)
    trace = asyncio.run(arun_episode(chat, rules, QUESTION, EpisodeConfig(model="never")))
    assert trace.finish_reason == "error"


def test_ids_recorded(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    config = EpisodeConfig(model="never")
    trace = run_episode(chat, rules, QUESTION, config, prompt_id="p7", group_id="g", sample_index=3)
    assert trace.prompt_id == "p7"
    assert trace.group_id == "g"
    assert trace.sample_index == 3


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode: 'sometimes'"):
        EpisodeConfig(model="m", mode="sometimes")  # type: ignore[arg-type]


def test_bad_max_turns() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        EpisodeConfig(model="m", max_turns=0)


def test_adaptive_needs_backend(chat: Any) -> None:
    with pytest.raises(ValueError, match="needs a rule backend"):
        play(chat, None, "call_once")


def test_text_search(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    prompt = "Question: what is six times seven?\nAnswer:"
    trace = run_text_episode(chat, rules, prompt, EpisodeConfig(model="text_search"))
    assert [s.source for s in trace.text_segments] == ["model", "tool", "model"]
    assert trace.text_segments[0].text.endswith("<search>rules for request 1</search>")
    assert model.requests[0]["stop"] == ["</search>"]
    assert trace.tool_calls[0].query == "rules for request 1"
    assert trace.text_segments[1].text.strip().startswith("<result>\n[")
    assert trace.text_segments[1].text in model.requests[1]["prompt"]
    assert trace.final_answer == "The answer is 42."
    assert trace.finish_reason == "stop"


def test_text_custom_tags(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    tags = TextTags(query_open="<q>", query_close="</q>", result_open="<r>", result_close="</r>")
    trace = run_text_episode(chat, rules, "Q:", EpisodeConfig(model="text_search"), tags=tags)
    assert model.requests[0]["stop"] == ["</q>"]
    assert trace.text_segments[0].text.endswith("<q>rules for request 1</q>")
    assert trace.text_segments[1].text.strip().endswith("</r>")


def test_text_max_turns(model: ScriptedModel, chat: Any, rules: RuleClient) -> None:
    trace = run_text_episode(chat, rules, "Q:", EpisodeConfig(model="text_loop", max_turns=2))
    assert trace.num_tool_calls == 2
    assert "stop" not in model.requests[-1]
    assert trace.finish_reason == "tool_calls_limit"


def test_text_never(model: ScriptedModel, chat: Any) -> None:
    trace = run_text_episode(chat, None, "Q:", EpisodeConfig(model="text_search", mode="never"))
    assert [s.source for s in trace.text_segments] == ["model"]
    assert "stop" not in model.requests[0]


def test_text_always_refused(chat: Any, rules: RuleClient) -> None:
    with pytest.raises(ValueError, match="text-tag protocol"):
        run_text_episode(chat, rules, "Q:", EpisodeConfig(model="text_search", mode="always"))


def test_text_async(model: ScriptedModel, scripted: tuple[ScriptedModel, LiveServer], rules: RuleClient) -> None:
    chat = make_async_client(scripted[1].base_url + "/v1", timeout=10, max_retries=1)
    trace = asyncio.run(arun_text_episode(chat, rules, "Q:", EpisodeConfig(model="text_search")))
    assert trace.protocol == "text"
    assert trace.num_tool_calls == 1
