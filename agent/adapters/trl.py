"""The rule tool as a plain typed function, the form TRL's `GRPOTrainer(tools=[...])` takes.

TRL renders a tool's schema with `transformers.utils.get_json_schema`, which
reads the function's name, type hints and Google-style docstring, and calls it
with the model's arguments as keywords. TRL runs coroutine functions as async
tools, so `make_trl_tool(backend, use_async=True)` returns one.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from agent.backend import RuleBackend
from rule_service.tool import TOOL_DESCRIPTION, TOOL_NAME, RuleToolInput


def trl_docstring() -> str:
    """Return the Google-style docstring of the TRL tool, built from `RuleToolInput`'s field descriptions."""
    lines = [TOOL_DESCRIPTION, "", "Args:"]
    for name, field in RuleToolInput.model_fields.items():
        lines.append(f"    {name}: {field.description}")
    lines += ["", "Returns:", "    The rules that apply, one block per rule (id, title, text), or an error message."]
    return "\n".join(lines)


def make_trl_tool(backend: RuleBackend, *, use_async: bool = False) -> Callable[..., str] | Callable[..., Awaitable[str]]:
    """Return the rule tool as a function named `search_safety_rules`, bound to `backend`.

    It returns the text for the model. Invalid arguments return an error text
    instead of raising; `RuleServiceError` from an HTTP backend propagates.
    """
    if use_async:
        async def search_safety_rules_async(
            query: str, top_k: int | None = None, categories: list[str] | None = None, ruleset: str | None = None,
        ) -> str:
            output = await backend.acall_tool(_arguments(query, top_k, categories, ruleset))
            return output.content

        tool: Any = search_safety_rules_async
    else:
        def search_safety_rules(
            query: str, top_k: int | None = None, categories: list[str] | None = None, ruleset: str | None = None,
        ) -> str:
            return backend.call_tool(_arguments(query, top_k, categories, ruleset)).content

        tool = search_safety_rules

    # TRL looks tools up by function name, and the model calls the tool by TOOL_NAME.
    tool.__name__ = TOOL_NAME
    tool.__qualname__ = TOOL_NAME
    tool.__doc__ = trl_docstring()
    return tool


def _arguments(query: str, top_k: int | None, categories: list[str] | None, ruleset: str | None) -> dict[str, Any]:
    arguments = {"query": query, "top_k": top_k, "categories": categories, "ruleset": ruleset}
    return {name: value for name, value in arguments.items() if value is not None}
