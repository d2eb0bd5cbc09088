"""Checks of request values against the deployment's limits, shared by HTTP routes and in-process callers.

Each check raises `InputError` naming the field, the value and the limit;
the HTTP layer turns it into a 422 and the rule tool into an error message
for the model.
"""

import math
from typing import Any

from rule_service.categories import ALL_CODES, describe_codes
from rule_service.service import Hit, LoadedRuleset, RuleService
from rule_service.schemas import SearchFilters
from rule_service.settings import Settings
from rule_service.tool import TOOL_NAME, RuleToolInput, RuleToolOutput, ToolArgumentError, ToolRuleText, format_rules, parse_arguments

MAX_VALUE_REPR = 80


class InputError(Exception):
    """A request value the schema accepts but the deployment's limits do not."""

    def __init__(self, field: str, value: Any, reason: str, status_code: int = 422, location: str = "body") -> None:
        self.location = location
        self.field = field
        self.value = value
        self.reason = reason
        self.status_code = status_code
        super().__init__(f"{field}: {reason} (got {show_value(value)})")


def show_value(value: Any) -> str:
    text = repr(value)
    if len(text) > MAX_VALUE_REPR:
        text = text[: MAX_VALUE_REPR - 3] + "..."
    return text


def check_query(settings: Settings, field: str, query: str) -> None:
    if not query.strip():
        raise InputError(field, query, "query must not be empty or whitespace")
    if len(query) > settings.max_query_chars:
        raise InputError(field, query, f"query has {len(query)} characters; the limit is {settings.max_query_chars} (ASCL_MAX_QUERY_CHARS)")
    if "\x00" in query:
        raise InputError(field, query, "query must not contain NUL characters")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError as exc:
        # JSON allows "\ud800" escapes, and a lone surrogate makes the tokenizer fail the whole encoder batch.
        raise InputError(field, query, f"query is not valid Unicode (lone surrogate at position {exc.start})") from None


def check_top_k(settings: Settings, field: str, top_k: int | None) -> int:
    if top_k is None:
        return min(settings.default_top_k, settings.max_top_k)
    if not 1 <= top_k <= settings.max_top_k:
        raise InputError(field, top_k, f"must be between 1 and {settings.max_top_k} (ASCL_MAX_TOP_K)")
    return top_k


def check_filters(service: RuleService, filters: SearchFilters, top_k_field: str = "top_k") -> tuple[LoadedRuleset, int]:
    settings = service.settings
    top_k = check_top_k(settings, top_k_field, filters.top_k)
    check_categories(filters.categories)
    return check_ruleset(service, filters.ruleset), top_k


def check_categories(categories: list[str] | None, field: str = "categories", location: str = "body") -> None:
    for position, code in enumerate(categories or []):
        if code not in ALL_CODES:
            raise InputError(f"{field}.{position}", code, f"unknown category; expected {describe_codes()}",
                             location=location)


def check_ruleset(service: RuleService, ruleset: str | None, field: str = "ruleset",
                  location: str = "body") -> LoadedRuleset:
    try:
        return service.get(ruleset)
    except KeyError:
        raise InputError(field, ruleset, f"unknown ruleset; available: {sorted(service.rulesets)}",
                         location=location) from None


def check_batch(settings: Settings, field: str, queries: list[str]) -> None:
    if len(queries) > settings.max_batch_queries:
        raise InputError(field, f"<{len(queries)} queries>",
                         f"at most {settings.max_batch_queries} queries per request (ASCL_MAX_BATCH_QUERIES)")
    for position, query in enumerate(queries):
        check_query(settings, f"{field}.{position}", query)


def finite(score: float) -> float:
    """Round a score for output; a non-finite one (never expected from cosine or BM25) becomes 0."""
    return round(score, 6) if math.isfinite(score) else 0.0


def validate_tool_call(service: RuleService, arguments: str | dict[str, Any]) -> tuple[RuleToolInput, LoadedRuleset, int]:
    """Parse and check tool arguments; raise `ToolArgumentError` with a message a model can act on."""
    settings = service.settings
    try:
        parsed = parse_arguments(arguments)
        check_query(settings, "query", parsed.query)
        top_k = check_top_k(settings, "top_k", parsed.top_k)
        check_categories(parsed.categories)
        loaded = check_ruleset(service, parsed.ruleset)
    except InputError as exc:
        raise ToolArgumentError(str(exc)) from None
    return parsed, loaded, top_k


def tool_output(hits: list[Hit], char_budget: int, index_version: str | None = None) -> RuleToolOutput:
    """Render search hits as the tool result: compact text for the model plus the rules behind it."""
    rules = [ToolRuleText(id=h.rule.id, title=h.rule.title, text=h.rule.text, score=finite(h.score)) for h in hits]
    return RuleToolOutput(content=format_rules(rules, char_budget), rules=rules, index_version=index_version)


def tool_error(exc: Exception) -> RuleToolOutput:
    return RuleToolOutput(content=f"Error: {exc}", rules=[], is_error=True)


def run_tool_call(service: RuleService, arguments: str | dict[str, Any]) -> RuleToolOutput:
    """Run one rule tool call in-process; invalid arguments give an error result, never an exception."""
    try:
        parsed, loaded, top_k = validate_tool_call(service, arguments)
    except ToolArgumentError as exc:
        return tool_error(exc)
    hits = service.search([parsed.query], top_k, ruleset=loaded.name, categories=parsed.categories)
    return tool_output(hits[0], service.settings.tool_char_budget, loaded.index_version)


__all__ = ["TOOL_NAME", "InputError", "run_tool_call", "tool_output", "validate_tool_call"]
