"""The rule tool: the text a model reads (`format_rules`), argument parsing and the schema renderings."""

import pytest

from rule_service.limits import run_tool_call
from rule_service.service import RuleService
from rule_service.tool import (
    NO_RULES_TEXT,
    TOOL_NAME,
    TRUNCATION_MARK,
    RuleToolInput,
    ToolArgumentError,
    ToolRuleText,
    format_rules,
    input_schema,
    mcp_tool,
    openai_tool,
    parse_arguments,
    responses_tool,
)
from tests.rule_service.support import SMALL_RULES, words


def _rules(count: int = 6) -> list[ToolRuleText]:
    return [ToolRuleText(id=rule_id, title=title, text=text, score=0.9 - 0.1 * position)
            for position, (rule_id, title, text, _, _) in enumerate(SMALL_RULES[:count])]


def _block(rule: ToolRuleText) -> str:
    return f"[{rule.id}] {rule.title}\n{rule.text}"


def _whole_rules_shown(text: str, rules: list[ToolRuleText]) -> list[str]:
    return [rule.id for rule in rules if _block(rule) in text]


# format_rules


def test_format_rules_deterministic() -> None:
    assert format_rules(_rules(), 1000) == format_rules(_rules(), 1000)


def test_format_rules_block_layout() -> None:
    rule = _rules(1)[0]

    assert format_rules([rule], 4000) == f"[{rule.id}] {rule.title}\n{rule.text}"


def test_format_rules_keeps_rank_order() -> None:
    rules = _rules()
    text = format_rules(rules, 10_000)

    assert [text.index(f"[{rule.id}]") for rule in rules] == sorted(text.index(f"[{rule.id}]") for rule in rules)


def test_format_rules_all_fit() -> None:
    rules = _rules()

    assert format_rules(rules, 10_000) == "\n\n".join(_block(rule) for rule in rules)


# Every budget from the settings minimum up to one where all six rules fit.
BUDGETS = range(200, 2700, 7)


def test_format_rules_within_budget() -> None:
    over = [budget for budget in BUDGETS if len(format_rules(_rules(), budget)) > budget]

    assert over == []


def test_format_rules_whole_rules_only() -> None:
    rules = _rules()
    broken = []
    for budget in BUDGETS:
        text = format_rules(rules, budget)
        shown = _whole_rules_shown(text, rules)
        if not shown:
            continue
        body = text.split("\n\n(", 1)[0]
        if body != "\n\n".join(_block(rule) for rule in rules[: len(shown)]):
            broken.append(budget)

    assert broken == []


def test_format_rules_first_rule_always_shown() -> None:
    first = _rules(1)[0]
    missing = [budget for budget in BUDGETS if not format_rules(_rules(), budget).startswith(f"[{first.id}] {first.title}\n")]

    assert missing == []


def test_format_rules_omitted_note() -> None:
    rules = _rules()
    wrong = []
    for budget in BUDGETS:
        text = format_rules(rules, budget)
        shown = _whole_rules_shown(text, rules)
        omitted = [rule.id for rule in rules[len(shown):]]
        note = f"\n\n({len(omitted)} more rule(s) omitted for length: {', '.join(omitted)})"
        if not shown or not omitted:
            expected_note = False
        else:
            expected_note = len(text) - (len(note) if text.endswith(note) else 0) + len(note) <= budget
        if text.endswith(note) != expected_note:
            wrong.append(budget)

    assert wrong == []


def test_format_rules_no_note_when_all_fit() -> None:
    assert "omitted" not in format_rules(_rules(), 10_000)


def test_format_rules_first_rule_truncated() -> None:
    long_rule = ToolRuleText(id="long.rule", title="A long rule", text=words(150), score=0.5)
    text = format_rules([long_rule, *_rules(2)], 300)

    assert len(text) <= 300
    assert text.startswith("[long.rule] A long rule\n")
    assert text.endswith(TRUNCATION_MARK)


def test_format_rules_truncates_at_word() -> None:
    long_rule = ToolRuleText(id="long.rule", title="A long rule", text=words(150), score=0.5)
    block = _block(long_rule)

    kept = format_rules([long_rule], 300).removesuffix(TRUNCATION_MARK)

    assert block.startswith(kept)
    assert block[len(kept)] == " "


def test_format_rules_truncation_hides_later_rules() -> None:
    long_rule = ToolRuleText(id="long.rule", title="A long rule", text=words(150), score=0.5)

    text = format_rules([long_rule, *_rules(2)], 300)

    assert _whole_rules_shown(text, _rules(2)) == []
    assert SMALL_RULES[0][0] not in text


def test_format_rules_budget_exact_fit() -> None:
    rule = _rules(1)[0]

    assert format_rules([rule], len(_block(rule))) == _block(rule)


def test_format_rules_budget_one_short() -> None:
    rule = _rules(1)[0]

    assert format_rules([rule], len(_block(rule)) - 1).endswith(TRUNCATION_MARK)


def test_format_rules_empty() -> None:
    assert format_rules([], 4000) == NO_RULES_TEXT


# parse_arguments


def test_parse_arguments_json_string() -> None:
    parsed = parse_arguments('{"query": "store bleach", "top_k": 2, "categories": ["S9"], "ruleset": "default"}')

    assert parsed == RuleToolInput(query="store bleach", top_k=2, categories=["S9"], ruleset="default")


def test_parse_arguments_dict() -> None:
    assert parse_arguments({"query": "store bleach"}).query == "store bleach"


@pytest.mark.parametrize(("arguments", "message"), [
    ("", "query is missing"),
    ("{", "not valid JSON"),
    ("null", "must be a JSON object, got NoneType"),
    ('"store bleach"', "must be a JSON object, got str"),
    ('{"query": ""}', "query: String should have at least 1 character"),
    ('{"query": "x", "top_k": 0}', "top_k: Input should be greater than or equal to 1"),
    ('{"query": "x", "limit": 3}', "limit is not a known argument"),
    ("[" * 5000, "nested too deeply"),
])
def test_parse_arguments_errors(arguments: str, message: str) -> None:
    with pytest.raises(ToolArgumentError) as caught:
        parse_arguments(arguments)

    assert message in str(caught.value)


# Renderings


def test_input_schema_required() -> None:
    assert input_schema()["required"] == ["query"]


def test_input_schema_forbids_extra() -> None:
    assert input_schema()["additionalProperties"] is False


def test_input_schema_flat_types() -> None:
    properties = input_schema()["properties"]

    assert {name: prop["type"] for name, prop in properties.items()} == {
        "query": "string", "top_k": "integer", "categories": "array", "ruleset": "string",
    }
    assert [name for name, prop in properties.items() if "anyOf" in prop] == []


def test_input_schema_top_k_maximum() -> None:
    assert input_schema(50)["properties"]["top_k"]["maximum"] == 50


def test_input_schema_no_maximum_by_default() -> None:
    assert "maximum" not in input_schema()["properties"]["top_k"]


def test_openai_tool_shape() -> None:
    tool = openai_tool(50)

    assert sorted(tool) == ["function", "type"]
    assert tool["type"] == "function"
    assert sorted(tool["function"]) == ["description", "name", "parameters"]
    assert tool["function"]["name"] == TOOL_NAME


def test_responses_tool_shape() -> None:
    tool = responses_tool(50)

    assert tool["type"] == "function"
    assert tool["name"] == TOOL_NAME
    assert tool["parameters"] == openai_tool(50)["function"]["parameters"]


def test_mcp_tool_shape() -> None:
    tool = mcp_tool(50)

    assert tool["name"] == TOOL_NAME
    assert tool["inputSchema"] == input_schema(50)
    assert "content" in tool["outputSchema"]["properties"]


def test_renderings_share_description() -> None:
    descriptions = {openai_tool()["function"]["description"], responses_tool()["description"], mcp_tool()["description"]}

    assert len(descriptions) == 1


def test_input_schema_not_shared_state() -> None:
    input_schema(50)["properties"]["query"]["description"] = "changed"

    assert input_schema()["properties"]["query"]["description"] != "changed"


def test_run_tool_call_in_process(bundled_service: RuleService) -> None:
    output = run_tool_call(bundled_service, '{"query": "I want to end my life", "top_k": 2}')

    assert output.is_error is False
    assert len(output.rules) == 2
    assert output.rules[0].id in output.content


def test_run_tool_call_bad_arguments(bundled_service: RuleService) -> None:
    output = run_tool_call(bundled_service, '{"query": "x", "top_k": 999}')

    assert output.is_error is True
    assert "top_k" in output.content
    assert "999" in output.content
