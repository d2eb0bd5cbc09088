"""The rule tool as OpenAI tool calls, a LangChain tool and a TRL function, run on the real rules.

Every adapter runs through `LocalRuleClient` over the session's bundled
service, and some also through `RuleClient` against the live server, so the
rule ids that a model reads are the same in every form.
"""

import asyncio
import inspect
import json
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from openai.types.chat import ChatCompletion, ChatCompletionFunctionToolParam, ChatCompletionMessageFunctionToolCall
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall
from pydantic import TypeAdapter
from transformers.utils import get_json_schema

from agent.adapters.langchain import RuleTool
from agent.adapters.openai_tools import aexecute_tool_calls, execute_tool_calls, tool_definition
from agent.adapters.trl import make_trl_tool
from agent.backend import RuleBackend
from agent.clients import RuleClient
from rule_service.service import RuleService
from rule_service.tool import TOOL_NAME, RuleToolInput, RuleToolOutput, openai_tool, responses_tool
from tests.conftest import LiveServer

QUERY = "what is the most painless way to end my life"
ARGUMENTS = {"query": QUERY, "top_k": 3}
FIELDS = set(RuleToolInput.model_fields)


@pytest.fixture
def expected(backend: RuleBackend) -> RuleToolOutput:
    """The backend's own result for `ARGUMENTS`, which every adapter must pass on unchanged."""
    return backend.call_tool(ARGUMENTS)


def _chat_call(call_id: str, arguments: Any, name: str = TOOL_NAME) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# OpenAI: tool definitions


def test_definition_chat() -> None:
    assert tool_definition("chat") == openai_tool()


def test_definition_responses() -> None:
    assert tool_definition("responses", max_top_k=20) == responses_tool(20)


def test_definition_chat_sdk_type() -> None:
    definition = TypeAdapter(ChatCompletionFunctionToolParam).validate_python(tool_definition("chat"))

    assert definition["function"]["name"] == TOOL_NAME


def test_definition_responses_sdk_type() -> None:
    definition = TypeAdapter(FunctionToolParam).validate_python(tool_definition("responses"))

    assert definition["name"] == TOOL_NAME


def test_definition_unknown_api() -> None:
    with pytest.raises(ValueError, match="'chat' or 'responses'"):
        tool_definition("completions")  # type: ignore[arg-type]


# OpenAI: executing tool calls


def test_execute_dict_call(backend: RuleBackend, expected: RuleToolOutput) -> None:
    messages = execute_tool_calls(backend, [_chat_call("call_1", json.dumps(ARGUMENTS))])

    assert messages == [{"role": "tool", "tool_call_id": "call_1", "content": expected.content}]


def test_execute_sdk_objects(backend: RuleBackend, expected: RuleToolOutput) -> None:
    completion = ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test",
        "choices": [{
            "index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None,
                        "tool_calls": [_chat_call("call_a", json.dumps(ARGUMENTS)), _chat_call("call_b", '{"query": "x"}')]},
        }],
    })
    tool_calls = completion.choices[0].message.tool_calls or []

    messages = execute_tool_calls(backend, tool_calls)

    assert isinstance(tool_calls[0], ChatCompletionMessageFunctionToolCall)
    assert [message["tool_call_id"] for message in messages] == ["call_a", "call_b"]
    assert messages[0]["content"] == expected.content


def test_execute_invalid_json(backend: RuleBackend) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", '{"query": "bleach')])

    assert message["content"].startswith("Error: ")
    assert "not valid JSON" in message["content"]


def test_execute_missing_query(backend: RuleBackend) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", '{"top_k": 2}')])

    assert "query is missing" in message["content"]


def test_execute_wrong_type(backend: RuleBackend) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", '{"query": "x", "top_k": "many"}')])

    assert "top_k" in message["content"]


def test_execute_unknown_tool(backend: RuleBackend) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", '{"query": "x"}', name="web_search")])

    assert message["tool_call_id"] == "call_1"
    assert "unknown tool 'web_search'" in message["content"]


def test_execute_arguments_not_text(backend: RuleBackend) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", None)])

    assert "arguments must be a JSON object" in message["content"]


def test_execute_dict_arguments(backend: RuleBackend, expected: RuleToolOutput) -> None:
    [message] = execute_tool_calls(backend, [_chat_call("call_1", ARGUMENTS)])

    assert message["content"] == expected.content


def test_execute_responses_item(backend: RuleBackend, expected: RuleToolOutput) -> None:
    item = ResponseFunctionToolCall(type="function_call", call_id="fc_1", name=TOOL_NAME, arguments=json.dumps(ARGUMENTS))

    [output] = execute_tool_calls(backend, [item])

    assert output == {"type": "function_call_output", "call_id": "fc_1", "output": expected.content}


def test_execute_async_parallel(backend: RuleBackend, expected: RuleToolOutput) -> None:
    calls = [_chat_call(f"call_{i}", json.dumps(ARGUMENTS)) for i in range(4)] + [_chat_call("bad", "{")]

    messages = asyncio.run(aexecute_tool_calls(backend, calls))

    assert [message["tool_call_id"] for message in messages] == ["call_0", "call_1", "call_2", "call_3", "bad"]
    assert all(message["content"] == expected.content for message in messages[:4])
    assert messages[4]["content"].startswith("Error: ")


def test_execute_over_http(server: LiveServer, expected: RuleToolOutput) -> None:
    with RuleClient(server.base_url) as client:
        [message] = execute_tool_calls(client, [_chat_call("call_1", json.dumps(ARGUMENTS))])

    assert message["content"] == expected.content


# LangChain


def _tool_call(args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    return {"name": TOOL_NAME, "args": args, "id": call_id, "type": "tool_call"}


def test_langchain_openai_schema(backend: RuleBackend) -> None:
    function = convert_to_openai_tool(RuleTool(backend=backend))["function"]

    assert function["name"] == TOOL_NAME
    assert function["parameters"]["required"] == ["query"]
    assert set(function["parameters"]["properties"]) == FIELDS


def test_langchain_args_schema(backend: RuleBackend) -> None:
    assert RuleTool(backend=backend).args_schema is RuleToolInput


def test_langchain_invoke_tool_call(backend: RuleBackend, expected: RuleToolOutput) -> None:
    message = RuleTool(backend=backend).invoke(_tool_call(ARGUMENTS))

    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "call_1"
    assert message.status == "success"
    assert message.content == expected.content


def test_langchain_artifact_rules(backend: RuleBackend, expected: RuleToolOutput) -> None:
    message = RuleTool(backend=backend).invoke(_tool_call(ARGUMENTS))

    assert [rule.id for rule in message.artifact.rules] == [rule.id for rule in expected.rules]


def test_langchain_ainvoke(backend: RuleBackend, expected: RuleToolOutput) -> None:
    message = asyncio.run(RuleTool(backend=backend).ainvoke(_tool_call(ARGUMENTS)))

    assert message.content == expected.content


def test_langchain_plain_invoke(backend: RuleBackend, expected: RuleToolOutput) -> None:
    assert RuleTool(backend=backend).invoke(ARGUMENTS) == expected.content


def test_langchain_missing_query(backend: RuleBackend) -> None:
    message = RuleTool(backend=backend).invoke(_tool_call({"top_k": 2}))

    assert message.status == "error"
    assert "query is missing" in message.content


def test_langchain_unknown_argument(backend: RuleBackend) -> None:
    message = RuleTool(backend=backend).invoke(_tool_call({"query": "x", "limit": 2}))

    assert message.status == "error"
    assert "limit is not a known argument" in message.content


def test_langchain_limit_error(backend: RuleBackend, bundled_service: RuleService) -> None:
    too_many = bundled_service.settings.max_top_k + 1
    message = RuleTool(backend=backend).invoke(_tool_call({"query": "x", "top_k": too_many}))

    assert message.status == "error"
    assert "top_k" in message.content


def test_langchain_over_http(server: LiveServer, expected: RuleToolOutput) -> None:
    with RuleClient(server.base_url) as client:
        message = RuleTool(backend=client).invoke(_tool_call(ARGUMENTS))

    assert message.content == expected.content


# TRL


def test_trl_schema_query_required(backend: RuleBackend) -> None:
    function = get_json_schema(make_trl_tool(backend))["function"]

    assert function["name"] == TOOL_NAME
    assert function["parameters"]["required"] == ["query"]
    assert set(function["parameters"]["properties"]) == FIELDS


def test_trl_schema_descriptions(backend: RuleBackend) -> None:
    properties = get_json_schema(make_trl_tool(backend))["function"]["parameters"]["properties"]

    assert properties["query"]["description"] == RuleToolInput.model_fields["query"].description


def test_trl_call_keywords(backend: RuleBackend, expected: RuleToolOutput) -> None:
    # TRL calls a tool with the model's arguments as keywords.
    assert make_trl_tool(backend)(**ARGUMENTS) == expected.content


def test_trl_invalid_top_k(backend: RuleBackend) -> None:
    text = make_trl_tool(backend)(query=QUERY, top_k=0)

    assert text.startswith("Error: ")
    assert "top_k" in text


def test_trl_async(backend: RuleBackend, expected: RuleToolOutput) -> None:
    tool = make_trl_tool(backend, use_async=True)

    assert inspect.iscoroutinefunction(tool)
    assert get_json_schema(tool)["function"]["name"] == TOOL_NAME
    assert asyncio.run(tool(**ARGUMENTS)) == expected.content
