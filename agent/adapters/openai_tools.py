"""The rule tool for the official `openai` client: the `tools` entry and the execution of tool calls.

Chat Completions tool calls (`{"id", "type": "function", "function": {"name",
"arguments"}}`) become `role: tool` messages. Responses API `function_call`
items (`{"type": "function_call", "call_id", "name", "arguments"}`) become
`function_call_output` items. Both are accepted as dicts or as the `openai`
SDK's objects, with `arguments` as the JSON string the model wrote.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from agent.backend import RuleBackend
from rule_service.tool import TOOL_NAME, RuleToolOutput, openai_tool, responses_tool

logger = logging.getLogger(__name__)


def tool_definition(api: Literal["chat", "responses"] = "chat", max_top_k: int | None = None) -> dict[str, Any]:
    """Return the rule tool as an entry of the `tools` list of Chat Completions or of the Responses API.

    `max_top_k` adds the server's `top_k` limit to the schema, so the model reads the limit before calling.
    """
    if api == "chat":
        return openai_tool(max_top_k)
    if api == "responses":
        return responses_tool(max_top_k)
    raise ValueError(f"api must be 'chat' or 'responses' (got {api!r})")


@dataclass(frozen=True)
class ParsedToolCall:
    """The fields of one tool call that execution needs, from either API."""

    call_id: str
    name: str | None
    arguments: Any
    responses_api: bool


def parse_tool_call(tool_call: Any) -> ParsedToolCall:
    """Read a Chat Completions tool call or a Responses API `function_call` item, dict or SDK object."""
    if _field(tool_call, "type") == "function_call":
        return ParsedToolCall(
            call_id=str(_field(tool_call, "call_id") or ""), name=_field(tool_call, "name"),
            arguments=_field(tool_call, "arguments"), responses_api=True,
        )
    function = _field(tool_call, "function")
    return ParsedToolCall(
        call_id=str(_field(tool_call, "id") or ""), name=_field(function, "name"),
        arguments=_field(function, "arguments"), responses_api=False,
    )


def execute_tool_call(backend: RuleBackend, tool_call: Any) -> dict[str, Any]:
    """Run one tool call and return the message that carries its result back to the model.

    An unknown tool name or malformed arguments give an error message that tells
    the model what to fix. `RuleServiceError` from an HTTP backend propagates,
    because an unreachable service is not the model's mistake.
    """
    call = parse_tool_call(tool_call)
    output = _rejected(call)
    if output is None:
        output = backend.call_tool(call.arguments)
    return tool_result_message(call, output)


async def aexecute_tool_call(backend: RuleBackend, tool_call: Any) -> dict[str, Any]:
    """Async form of `execute_tool_call`."""
    call = parse_tool_call(tool_call)
    output = _rejected(call)
    if output is None:
        output = await backend.acall_tool(call.arguments)
    return tool_result_message(call, output)


def execute_tool_calls(backend: RuleBackend, tool_calls: list[Any]) -> list[dict[str, Any]]:
    """Run every tool call of one assistant turn in order; return one result message per call."""
    return [execute_tool_call(backend, tool_call) for tool_call in tool_calls]


async def aexecute_tool_calls(backend: RuleBackend, tool_calls: list[Any]) -> list[dict[str, Any]]:
    """Run the tool calls of one assistant turn concurrently; results keep the order of the calls."""
    return list(await asyncio.gather(*(aexecute_tool_call(backend, tool_call) for tool_call in tool_calls)))


def tool_result_message(call: ParsedToolCall, output: RuleToolOutput) -> dict[str, Any]:
    """Return the `role: tool` message, or for the Responses API the `function_call_output` item."""
    if call.responses_api:
        return {"type": "function_call_output", "call_id": call.call_id, "output": output.content}
    return {"role": "tool", "tool_call_id": call.call_id, "content": output.content}


def _rejected(call: ParsedToolCall) -> RuleToolOutput | None:
    """Return an error result for a call that cannot reach the backend, else None."""
    if call.name != TOOL_NAME:
        logger.info("tool call %s names unknown tool %r", call.call_id, call.name)
        return _error(f"unknown tool {call.name!r}; the only tool available is {TOOL_NAME!r}")
    if not isinstance(call.arguments, str | dict):
        logger.info("tool call %s has arguments of type %s", call.call_id, type(call.arguments).__name__)
        return _error(
            f"arguments must be a JSON object string, got {type(call.arguments).__name__}; "
            'send {"query": "..."}'
        )
    return None


def _error(message: str) -> RuleToolOutput:
    # Same form as the rule service's own error results ("Error: <message>").
    return RuleToolOutput(content=f"Error: {message}", rules=[], is_error=True)


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)
