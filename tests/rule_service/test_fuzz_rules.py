"""Hypothesis fuzzing of the rule loader: any file content gives problems, never an exception.

Files are random text and bytes, random YAML and JSON values, valid rules
with fields replaced by values of the wrong type, huge strings, odd Unicode,
NUL bytes and deep nesting. `validate_path` must return lists of rules and
problems for all of them.
"""

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rule_service.rules import Problem, Rule, validate_path
from tests.rule_service.support import small_rules

MAX_EXAMPLES = 200
SUFFIXES = [".yaml", ".jsonl"]
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings that often break parsers and terminals: NUL, control characters, a BOM, bidi overrides and YAML syntax.
ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=200) | st.sampled_from([
    "\x00", "\ufeff", "\u2028", "\u202e", "\U0001f600", "\r", "\x1b[31m", "---", "...", "- ", ": ", "{", "[",
    "&a *a", "!!python/object:os.system", "<<: *a", "%YAML 1.1", "rules:", "'", '"', "\\",
])
HUGE_TEXT = st.integers(min_value=10_000, max_value=100_000).map(lambda size: "x" * size)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | ODD_TEXT | HUGE_TEXT
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ODD_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELDS = list(Rule.model_fields)


def _validate(suffix: str, content: str | bytes) -> tuple[list[Rule], list[Problem]]:
    """Write `content` to a rule file with `suffix` in a fresh folder and validate it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"rules{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        return validate_path(Path(folder))


def _check(suffix: str, content: str | bytes) -> None:
    rules, problems = _validate(suffix, content)
    assert all(isinstance(rule, Rule) for rule in rules)
    assert all(isinstance(problem, Problem) for problem in problems)
    assert all(str(problem) for problem in problems)


def _broken_rule(field: str, value: Any) -> dict[str, Any]:
    """A valid rule with one field replaced by `value`."""
    rule = small_rules(1)[0]
    rule[field] = value
    return rule


def _dump(suffix: str) -> Callable[[Any], str]:
    if suffix == ".jsonl":
        return lambda value: json.dumps(value, ensure_ascii=False)
    return lambda value: yaml.safe_dump(value, allow_unicode=True)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(content=st.text(max_size=2000) | ODD_TEXT)
def test_random_text(suffix: str, content: str) -> None:
    _check(suffix, content)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(content=st.binary(max_size=2000))
def test_random_bytes(suffix: str, content: bytes) -> None:
    _check(suffix, content)


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(value=VALUES)
def test_random_values(suffix: str, value: Any) -> None:
    _check(suffix, _dump(suffix)(value))


@pytest.mark.parametrize("suffix", SUFFIXES)
@FUZZ
@given(field=st.sampled_from([*FIELDS, "extra"]), value=VALUES)
def test_wrong_field_type(suffix: str, field: str, value: Any) -> None:
    rule = _broken_rule(field, value)
    content = _dump(suffix)({"rules": [rule]} if suffix == ".yaml" else rule)
    _check(suffix, content)


# Python's default recursion limit is 1,000, so 3,000 levels are deep enough, and parsing them is slow.
@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.sampled_from(["[", "{", "- ", "a: ", "{\"a\": "]), max_size=4), depth=st.integers(1, 3000))
def test_deep_nesting(suffix: str, lines: list[str], depth: int) -> None:
    _check(suffix, "".join(lines) * depth)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_nul_byte_problem(suffix: str) -> None:
    _, problems = _validate(suffix, "\x00")
    assert [problem.reason for problem in problems] == ["file contains NUL bytes"]


def test_deep_jsonl_problem() -> None:
    _, problems = _validate(".jsonl", "[" * 100_000)
    assert [problem.reason for problem in problems] == ["invalid JSON: arrays or objects nested too deeply"]


def test_duplicate_rules_key() -> None:
    _, problems = _validate(".yaml", "rules: 1\nrules: [1]\n")
    assert [(problem.line, problem.reason) for problem in problems] == [(2, "a rule must be a mapping, got int")]


def test_merged_rules_key() -> None:
    _, problems = _validate(".yaml", "<<: {rules: [1]}\n")
    assert [(problem.line, problem.reason) for problem in problems] == [(1, "a rule must be a mapping, got int")]


def test_valid_rule_loads() -> None:
    rules, problems = _validate(".jsonl", json.dumps(small_rules(1)[0]))
    assert problems == []
    assert len(rules) == 1
