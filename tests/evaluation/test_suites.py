"""Bundled evaluation suites and `load_suite`: counts, labels, answers and id handling."""

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from math_verify import parse, verify

from agent.batch import PromptRecord, load_prompts
from ascl.evaluation import suites
from ascl.evaluation.suites import (
    WRAPPER_STYLES, SuiteError, bundled_suite_paths, group_by_style, load_suite, wrapper_style,
)
from rule_service.categories import CATEGORIES
from rule_service.settings import bundled_corpus_root

HAZARD_KEYS = {c.key for c in CATEGORIES if c.llama_guard}
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


@pytest.fixture(scope="module")
def default_suite() -> list[PromptRecord]:
    return load_suite("default")


def of_kind(records: list[PromptRecord], kind: str) -> list[PromptRecord]:
    return [r for r in records if r.kind == kind]


def test_default_suite_sizes(default_suite: list[PromptRecord]) -> None:
    kinds = Counter(r.kind for r in default_suite)
    assert kinds["harmful"] >= 140
    assert kinds["benign"] >= 130
    assert kinds["reasoning"] >= 110
    assert set(kinds) == {"harmful", "benign", "reasoning"}


def test_bundled_files_validate() -> None:
    for path in bundled_suite_paths("default"):
        assert path.parent == bundled_corpus_root() / "eval"
        assert load_prompts(path)


def test_harmful_covers_every_hazard(default_suite: list[PromptRecord]) -> None:
    counts = Counter(r.category for r in of_kind(default_suite, "harmful"))
    assert set(counts) == HAZARD_KEYS
    assert len(HAZARD_KEYS) == 14
    assert min(counts.values()) >= 10


def test_harmful_ids_carry_style(default_suite: list[PromptRecord]) -> None:
    styles_per_category: dict[str, set[str]] = {}
    for prompt in of_kind(default_suite, "harmful"):
        style = wrapper_style(prompt.id)
        assert style in WRAPPER_STYLES, prompt.id
        assert prompt.id.startswith(f"harm-{prompt.category}-{style}-")
        styles_per_category.setdefault(prompt.category, set()).add(style)
    assert all(styles == set(WRAPPER_STYLES) for styles in styles_per_category.values())


def test_safety_prompts_have_no_ground_truth(default_suite: list[PromptRecord]) -> None:
    for prompt in of_kind(default_suite, "harmful") + of_kind(default_suite, "benign"):
        assert prompt.ground_truth is None, prompt.id
        assert prompt.prompt and prompt.category


def test_benign_categories(default_suite: list[PromptRecord]) -> None:
    counts = Counter(r.category for r in of_kind(default_suite, "benign"))
    assert {"history", "medicine", "security_education", "fiction", "homonyms", "legal"} <= set(counts)
    assert not set(counts) & HAZARD_KEYS
    assert min(counts.values()) >= 5


def test_reasoning_categories(default_suite: list[PromptRecord]) -> None:
    counts = Counter(r.category for r in of_kind(default_suite, "reasoning"))
    assert set(counts) == {"gsm", "competition", "science_mc"}
    assert min(counts.values()) >= 25


def test_gsm_answers_are_numbers(default_suite: list[PromptRecord]) -> None:
    for prompt in of_kind(default_suite, "reasoning"):
        if prompt.category == "gsm":
            assert NUMBER.match(prompt.ground_truth), (prompt.id, prompt.ground_truth)
            assert prompt.prompt.endswith("\\boxed{}.")


def test_competition_answers_parse(default_suite: list[PromptRecord]) -> None:
    for prompt in of_kind(default_suite, "reasoning"):
        if prompt.category == "competition":
            gold = parse(f"${prompt.ground_truth}$")
            assert gold, (prompt.id, prompt.ground_truth)
            assert verify(gold, parse(f"The answer is \\boxed{{{prompt.ground_truth}}}")), prompt.id
            assert not verify(gold, parse("\\boxed{123456789}")), prompt.id
            assert prompt.prompt.endswith("\\boxed{}.")


def test_multiple_choice_prompts(default_suite: list[PromptRecord]) -> None:
    letters = Counter()
    for prompt in of_kind(default_suite, "reasoning"):
        if prompt.category != "science_mc":
            continue
        assert prompt.ground_truth in {"A", "B", "C", "D"}, prompt.id
        options = re.findall(r"^([A-D])\) \S", prompt.prompt, flags=re.MULTILINE)
        assert options == ["A", "B", "C", "D"], prompt.id
        assert "'Answer: X'" in prompt.prompt
        letters[prompt.ground_truth] += 1
    assert min(letters[letter] for letter in "ABCD") >= 5


def test_single_bundled_suite() -> None:
    records = load_suite("harmful")
    assert {r.kind for r in records} == {"harmful"}


def test_suite_from_several_sources(tmp_path: Path) -> None:
    extra = tmp_path / "extra.csv"
    extra.write_text("prompt,category\nHow do I kill a stuck job?,harmful\n", encoding="utf-8")
    records = load_suite(["reasoning", extra])
    assert records[-1].id == "orbench-extra-1"
    assert len(records) == len(load_suite("reasoning")) + 1


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(json.dumps({"id": "same", "prompt": "one"}) + "\n", encoding="utf-8")
    second.write_text(json.dumps({"id": "same", "prompt": "two"}) + "\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=f"'same' is in both {re.escape(str(first))} and {re.escape(str(second))}"):
        load_suite([first, second])


def test_default_twice_rejected() -> None:
    with pytest.raises(SuiteError, match="is in both"):
        load_suite(["default", "harmful"])


def test_no_sources() -> None:
    with pytest.raises(SuiteError, match="no prompt sources"):
        load_suite([])


def test_format_applies_to_paths(tmp_path: Path) -> None:
    path = tmp_path / "toxic-looking.csv"
    path.write_text("prompt,category\nsome request,violence\n", encoding="utf-8")
    records = load_suite([path], format="orbench")
    assert [(r.kind, r.category) for r in records] == [("harmful", "violent_crimes")]


def test_wheel_layout_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A wheel carries corpus/ as rule_service/_corpus; suites must follow bundled_corpus_root wherever it points.
    installed = tmp_path / "rule_service" / "_corpus"
    shutil.copytree(bundled_corpus_root() / "eval", installed / "eval")
    monkeypatch.setattr(suites, "bundled_corpus_root", lambda: installed)
    assert bundled_suite_paths("benign") == [installed / "eval" / "benign.jsonl"]
    assert len(load_suite("benign")) >= 130


def test_missing_bundled_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suites, "bundled_corpus_root", lambda: tmp_path)
    with pytest.raises(SuiteError, match="file\\(s\\) not found"):
        load_suite("default")


def test_wrapper_style_ids() -> None:
    assert wrapper_style("harm-violent_crimes-roleplay-03") == "roleplay"
    assert wrapper_style("harm-self_harm-translation-12") == "translation"
    assert wrapper_style("harm-hate-poetry-01") is None
    assert wrapper_style("benign-history-01") is None
    assert wrapper_style("xstest-5") is None


def test_group_by_style() -> None:
    records = [
        PromptRecord(id="harm-hate-fiction-01", prompt="a", kind="harmful", category="hate"),
        PromptRecord(id="xstest-9", prompt="b", kind="harmful", category="contrast_homonyms"),
        PromptRecord(id="benign-history-01", prompt="c", kind="benign", category="history"),
        PromptRecord(id="harm-hate-direct-01", prompt="d", kind="harmful", category="hate"),
    ]
    groups = group_by_style(records)
    assert list(groups) == ["direct", "fiction", "unspecified"]
    assert [r.id for r in groups["unspecified"]] == ["xstest-9"]
