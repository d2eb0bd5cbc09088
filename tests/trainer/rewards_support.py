"""Support for the reward tests: traces built in code, and judge policies for the scripted model server.

The scripted OpenAI-compatible server of `tests/agent/scripted_server.py`
acts as the judge model: no chat model that could judge runs on this
machine. The policies below are added to it under judge model names. They
read the response between the rubric's markers and decide by visible marks,
so each test knows the verdict to expect and can tell it from the heuristic's:

- "UNSAFE" in the response: not safe; "[refuse]": a refusal; "[rule:ID]": cites rule ID.
"""

import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pytest

from agent.trace import Labels, ToolCallEvent, Trace
from tests.agent.scripted_server import CHAT_POLICIES, ChatView, ScriptedModel, start_scripted_server
from tests.conftest import LiveServer

_counter = itertools.count()
_RESPONSE = re.compile(r"<<<RESPONSE\n(.*)\nRESPONSE>>>", re.DOTALL)


def make_trace(answer: str | None = "Here is a full answer.", kind: str | None = "harmful", *,
               ground_truth: Any = None, request: str = "a request", tool_calls: list[ToolCallEvent] | None = None,
               error: str | None = None, finish_reason: str = "stop", trace_id: str | None = None,
               prompt_id: str = "p1", sample_index: int | None = None) -> Trace:
    """Build a trace as the agent loop writes it, with the given final answer and labels."""
    number = next(_counter)
    messages: list[dict[str, Any]] = [{"role": "user", "content": request}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    calls = tool_calls or []
    return Trace(
        trace_id=trace_id or f"t{number}", prompt_id=prompt_id, group_id=prompt_id,
        sample_index=number if sample_index is None else sample_index, model="policy", mode="adaptive",
        max_turns=4, messages=messages, tool_calls=calls, consulted_rules=any(call.rule_ids for call in calls),
        num_tool_calls=sum(call.origin == "model" for call in calls), final_answer=answer,
        finish_reason="error" if error else finish_reason, labels=Labels(kind=kind, ground_truth=ground_truth),
        error=error, started_at=datetime(2026, 1, 1, tzinfo=timezone.utc), duration_ms=1.0,
    )


def tool_call(arguments: str = '{"query": "rules"}', error: str | None = None, origin: str = "model") -> ToolCallEvent:
    return ToolCallEvent(origin=origin, turn=0, name="search_safety_rules", arguments=arguments,
                         rule_ids=[] if error else ["weapons.explosives"], scores=[] if error else [0.5],
                         latency_ms=1.0, error=error)


def judged_response(view: ChatView) -> str:
    """Return the response the judge is asked about, from the first user message."""
    for message in view.body["messages"]:
        if message.get("role") == "user":
            found = _RESPONSE.search(message["content"])
            return found.group(1) if found else ""
    return ""


def verdict_for(response: str) -> dict[str, Any]:
    return {"safe": "UNSAFE" not in response, "refusal": "[refuse]" in response,
            "cited_rule_ids": re.findall(r"\[rule:([\w.]+)\]", response)}


def _reply(content: str) -> tuple[dict[str, Any], str]:
    return {"role": "assistant", "content": content}, "stop"


def _judge(view: ChatView) -> tuple[dict[str, Any], str]:
    return _reply(json.dumps(verdict_for(judged_response(view))))


def _judge_fenced(view: ChatView) -> tuple[dict[str, Any], str]:
    verdict = json.dumps(verdict_for(judged_response(view)), indent=2)
    return _reply(f"<think>Weighing the response.</think>\nMy verdict:\n```json\n{verdict}\n```\nThat is all.")


def _judge_retry(view: ChatView) -> tuple[dict[str, Any], str]:
    # Prose first; the verdict only once the rubric's correction message is in the conversation.
    if "not a valid verdict" in str(view.body["messages"][-1].get("content")):
        return _judge(view)
    return _reply("The response looks fine to me.")


def _judge_invalid(view: ChatView) -> tuple[dict[str, Any], str]:
    return _reply('{"safe": "yes", "refusal": false}')


JUDGE_POLICIES = {
    "judge": _judge,                  # the verdict as bare JSON
    "judge_fenced": _judge_fenced,    # a think block and prose around a ```json fence
    "judge_retry": _judge_retry,      # prose until corrected, then the verdict
    "judge_invalid": _judge_invalid,  # always a verdict with a field of the wrong type
}


@contextmanager
def scripted_judge_server() -> Iterator[tuple[ScriptedModel, LiveServer]]:
    """Start the scripted model server with the judge policies added; remove them again afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for name, policy in JUDGE_POLICIES.items():
            patch.setitem(CHAT_POLICIES, name, policy)
        model, live = start_scripted_server()
        try:
            yield model, live
        finally:
            live.stop()


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedModel, LiveServer]]:
    """The scripted model server with the judge policies, one per test module."""
    with scripted_judge_server() as started:
        yield started


@pytest.fixture
def model(scripted: tuple[ScriptedModel, LiveServer]) -> ScriptedModel:
    scripted[0].reset()
    return scripted[0]


@pytest.fixture
def url(scripted: tuple[ScriptedModel, LiveServer]) -> str:
    return scripted[1].base_url + "/v1"
