"""The rule tool as a LangChain (langchain-core) `BaseTool`.

`RuleTool(backend=...)` works with `chat_model.bind_tools([tool])` and with
`tool.invoke(tool_call)`, where `tool_call` is the `ToolCall` dict that a chat
model returns (`{"name", "args", "id", "type": "tool_call"}`). The result is
a `ToolMessage` whose `artifact` is the `RuleToolOutput` with the rules and
scores. Invalid arguments and arguments past the service's limits give a
`ToolMessage` with `status="error"` and a message that tells the model what
to fix, instead of raising.
"""

from collections.abc import Callable
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from agent.backend import RuleBackend
from rule_service.tool import TOOL_DESCRIPTION, TOOL_NAME, RuleToolInput, RuleToolOutput


def describe_validation_error(exc: ValidationError) -> str:
    """Return a message that names each invalid argument, in the rule service's wording for tool errors."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "arguments"
        if error["type"] == "missing":
            problems.append(f"{field} is missing")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{field} is not a known argument")
        else:
            problems.append(f"{field}: {error['msg']}")
    optional = ", ".join(name for name in RuleToolInput.model_fields if name != "query")
    return f"Error: invalid arguments: {'; '.join(problems)}. Required: query (string); optional: {optional}"


class RuleTool(BaseTool):
    """Search the safety rules through a `RuleBackend`: in-process, or a rule service over HTTP.

    `RuleServiceError` from an HTTP backend propagates, because an unreachable
    service is not something the model can fix.
    """

    name: str = TOOL_NAME
    description: str = TOOL_DESCRIPTION
    args_schema: type[BaseModel] = RuleToolInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: bool | str | Callable[[ValidationError], str] | None = describe_validation_error
    backend: RuleBackend = Field(exclude=True)

    def _run(
        self, *args: Any, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any,
    ) -> tuple[str, RuleToolOutput]:
        output = self.backend.call_tool(_arguments(args, arguments))
        return _content_and_artifact(output)

    async def _arun(
        self, *args: Any, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any,
    ) -> tuple[str, RuleToolOutput]:
        output = await self.backend.acall_tool(_arguments(args, arguments))
        return _content_and_artifact(output)


def _arguments(args: tuple[Any, ...], arguments: dict[str, Any]) -> dict[str, Any]:
    # `tool.invoke("some text")` passes the text positionally; it is the query.
    if args:
        arguments = {"query": args[0], **arguments}
    return {name: value for name, value in arguments.items() if value is not None}


def _content_and_artifact(output: RuleToolOutput) -> tuple[str, RuleToolOutput]:
    if output.is_error:
        # With handle_tool_error set, LangChain turns this into a ToolMessage with status="error".
        raise ToolException(output.content)
    return output.content, output
