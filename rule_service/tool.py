"""The rule tool: one input model, one output model, and their renderings.

Every form in which a model sees the tool (OpenAI Chat Completions, the
Responses API, MCP) is generated from `RuleToolInput`, and every result is
rendered by `format_rules`, so the agent adapters and the HTTP route agree.
"""

import copy
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TOOL_NAME = "search_safety_rules"
TOOL_DESCRIPTION = (
    "Look up the safety rules that apply to a request before answering it. Call this when a request "
    "touches a sensitive area (violence, weapons, crime, self-harm, sexual content, hate, privacy, "
    "medical, legal or financial advice, elections, code execution) or looks like an attempt to get "
    "around safety rules. Describe the request in a short query; the rules say what help is fine, "
    "what is not, and what to offer instead."
)
NO_RULES_TEXT = "No safety rules matched this query. Answer using your own judgement."
TRUNCATION_MARK = " [truncated]"


class RuleToolInput(BaseModel):
    """Arguments of the rule tool as a model writes them."""

    model_config = ConfigDict(extra="forbid")

    query: Annotated[
        str,
        Field(min_length=1, description="A short description of the user's request, in plain words."),
    ]
    top_k: Annotated[int | None, Field(ge=1, description="How many rules to return (default 5).")] = None
    categories: Annotated[
        list[str] | None,
        Field(description="Only rules in these categories, e.g. ['self_harm'] or Llama Guard codes like ['S11']."),
    ] = None
    ruleset: Annotated[str | None, Field(description="Name of the rule set to search; the default when omitted.")] = None


class ToolRuleText(BaseModel):
    """The part of a rule that the model reads."""

    id: str
    title: str
    text: str
    score: float


class RuleToolOutput(BaseModel):
    """Result of one tool call: the text for the model and the rules behind it."""

    content: str
    rules: list[ToolRuleText]
    is_error: bool = False
    index_version: str | None = None


def input_schema(max_top_k: int | None = None) -> dict[str, Any]:
    """JSON schema of the tool arguments, with the server's `top_k` limit when given."""
    schema = copy.deepcopy(RuleToolInput.model_json_schema())
    schema.pop("title", None)
    top_k = schema["properties"]["top_k"]
    # pydantic renders `int | None` as anyOf; flatten it for clients that only
    # read simple schemas.
    top_k.pop("anyOf", None)
    top_k.update({"type": "integer", "minimum": 1})
    if max_top_k is not None:
        top_k["maximum"] = max_top_k
    for name in ("categories", "ruleset"):
        prop = schema["properties"][name]
        prop.pop("anyOf", None)
        prop.pop("default", None)
        prop["type"] = "array" if name == "categories" else "string"
        if name == "categories":
            prop["items"] = {"type": "string"}
    top_k.pop("default", None)
    for prop in schema["properties"].values():
        prop.pop("title", None)
    return schema


def openai_tool(max_top_k: int | None = None) -> dict[str, Any]:
    """Render the tool as an entry of the Chat Completions `tools` list."""
    return {
        "type": "function",
        "function": {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": input_schema(max_top_k)},
    }


def responses_tool(max_top_k: int | None = None) -> dict[str, Any]:
    """Render the tool as an entry of the Responses API `tools` list."""
    return {
        "type": "function",
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "parameters": input_schema(max_top_k),
        "strict": False,
    }


def mcp_tool(max_top_k: int | None = None) -> dict[str, Any]:
    """Render the tool as an MCP `tools/list` entry."""
    output = copy.deepcopy(RuleToolOutput.model_json_schema())
    return {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "inputSchema": input_schema(max_top_k),
        "outputSchema": output,
    }


def parse_arguments(arguments: str | dict[str, Any]) -> RuleToolInput:
    """Validate tool arguments; raise `ToolArgumentError` with a message a model can act on."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentError(
                f"arguments are not valid JSON ({exc.msg} at position {exc.pos}); "
                'send a JSON object such as {"query": "how to store bleach safely"}'
            ) from None
        except RecursionError:
            raise ToolArgumentError(
                'arguments are nested too deeply to parse; send a flat JSON object such as {"query": "..."}'
            ) from None
    if not isinstance(arguments, dict):
        raise ToolArgumentError(
            f"arguments must be a JSON object, got {type(arguments).__name__}; "
            'send {"query": "..."}'
        )
    try:
        return RuleToolInput.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(error) for error in exc.errors())
        raise ToolArgumentError(f"invalid arguments: {problems}. Required: query (string); optional: top_k, categories, ruleset") from None


class ToolArgumentError(ValueError):
    """Invalid tool arguments from a model; the message explains what to fix."""


def _describe_error(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "arguments"
    if error["type"] == "missing":
        return f"{field} is missing"
    if error["type"] == "extra_forbidden":
        return f"{field} is not a known argument"
    return f"{field}: {error['msg']}"


def format_rules(rules: list[ToolRuleText], char_budget: int) -> str:
    """Render rules as compact text for the model, whole rules only, within `char_budget` characters.

    Rules are kept in rank order while they fit. When even the first rule is
    longer than the budget, its text is cut at a word boundary and marked, so
    the model always sees the best rule's id and title.
    """
    if not rules:
        return NO_RULES_TEXT[:char_budget]
    blocks = [_rule_block(rule) for rule in rules]
    kept: list[str] = []
    used = 0
    for block in blocks:
        cost = len(block) + (2 if kept else 0)
        if used + cost > char_budget:
            break
        kept.append(block)
        used += cost
    if not kept:
        return _truncate(blocks[0], char_budget)

    omitted = [rule.id for rule in rules[len(kept):]]
    text = "\n\n".join(kept)
    if omitted:
        note = f"\n\n({len(omitted)} more rule(s) omitted for length: {', '.join(omitted)})"
        if len(text) + len(note) <= char_budget:
            text += note
    return text


def _rule_block(rule: ToolRuleText) -> str:
    return f"[{rule.id}] {rule.title}\n{rule.text}"


def _truncate(block: str, char_budget: int) -> str:
    room = char_budget - len(TRUNCATION_MARK)
    cut = block[:room]
    if " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut + TRUNCATION_MARK
