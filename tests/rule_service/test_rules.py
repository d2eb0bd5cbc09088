"""Rule files: the bundled corpus, every kind of problem the loader reports, and `ascl rules validate`."""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rule_service.categories import CATEGORIES
from rule_service.rules import (
    MAX_TEXT_WORDS,
    MIN_TEXT_WORDS,
    Rule,
    RuleSetInvalidError,
    load_ruleset,
    validate_path,
)
from tests.conftest import run_ascl
from tests.rule_service.support import (
    GARDEN_TEXT,
    line_of,
    make_rule,
    small_rules,
    words,
    write_jsonl_rules,
    write_yaml_rules,
)

LLAMA_GUARD_CODES = [f"S{number}" for number in range(1, 15)]
EXIT_INVALID_RULES = 3


@pytest.fixture(scope="module")
def bundled_rules(bundled_corpus_dir: Path) -> list[Rule]:
    rules, problems = validate_path(bundled_corpus_dir)
    assert problems == []
    return rules


# The bundled corpus.


def test_bundled_corpus_has_no_problems(bundled_corpus_dir: Path) -> None:
    _, problems = validate_path(bundled_corpus_dir)

    assert [str(problem) for problem in problems] == []


@pytest.mark.parametrize("code", LLAMA_GUARD_CODES)
def test_bundled_corpus_covers_llama_guard_code(bundled_rules: list[Rule], code: str) -> None:
    key = next(category.key for category in CATEGORIES if category.llama_guard == code)
    counts = Counter(rule.category for rule in bundled_rules)

    assert counts[key] >= 8


@pytest.mark.parametrize("code", LLAMA_GUARD_CODES)
def test_bundled_hazard_rules_carry_llama_guard_code(bundled_rules: list[Rule], code: str) -> None:
    key = next(category.key for category in CATEGORIES if category.llama_guard == code)
    missing = [rule.id for rule in bundled_rules if rule.category == key and code not in rule.categories]

    assert missing == []


def test_bundled_corpus_help_fully_count(bundled_rules: list[Rule]) -> None:
    assert sum(rule.category == "help_fully" for rule in bundled_rules) >= 25


def test_bundled_corpus_adversarial_count(bundled_rules: list[Rule]) -> None:
    assert sum(rule.category == "adversarial" for rule in bundled_rules) >= 10


def test_bundled_corpus_word_counts(bundled_rules: list[Rule]) -> None:
    outside = [(rule.id, len(rule.text.split())) for rule in bundled_rules
               if not MIN_TEXT_WORDS <= len(rule.text.split()) <= MAX_TEXT_WORDS]

    assert outside == []


def test_bundled_corpus_source_is_ascl_default(bundled_rules: list[Rule]) -> None:
    assert {rule.source for rule in bundled_rules} == {"ascl-default"}


def test_cli_validate_bundled_corpus_exits_0(bundled_corpus_dir: Path, tmp_path: Path) -> None:
    result = run_ascl(["rules", "validate", str(bundled_corpus_dir)], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert result.stderr == ""


# Loading.


def test_load_ruleset_valid_folder(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "a.yaml", small_rules(2))
    write_jsonl_rules(tmp_path / "nested" / "b.jsonl", small_rules(2, start=2))

    ruleset = load_ruleset(tmp_path, "mine")

    assert sorted(rule.id for rule in ruleset.rules) == sorted(r["id"] for r in small_rules(4))
    assert ruleset.name == "mine"


def test_load_ruleset_rejects_whole_set(tmp_path: Path) -> None:
    rules = small_rules(3)
    rules[2]["severity"] = "apocalyptic"
    write_yaml_rules(tmp_path / "rules.yaml", rules)

    with pytest.raises(RuleSetInvalidError) as caught:
        load_ruleset(tmp_path, "mine")

    assert len(caught.value.problems) == 1
    assert "severity" in str(caught.value)


def test_corpus_sha256_ignores_file_layout(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "one" / "all.yaml", small_rules(4))
    write_yaml_rules(tmp_path / "two" / "first.yaml", small_rules(2, start=2))
    write_jsonl_rules(tmp_path / "two" / "second.jsonl", small_rules(2))

    one = load_ruleset(tmp_path / "one", "one")
    two = load_ruleset(tmp_path / "two", "two")

    assert one.sha256 == two.sha256


def test_corpus_sha256_changes_with_text(tmp_path: Path) -> None:
    write_yaml_rules(tmp_path / "one" / "rules.yaml", small_rules(2))
    changed = small_rules(2)
    changed[0]["text"] = GARDEN_TEXT + " Seal large cuts only if the tree is diseased."
    write_yaml_rules(tmp_path / "two" / "rules.yaml", changed)

    assert load_ruleset(tmp_path / "one", "x").sha256 != load_ruleset(tmp_path / "two", "x").sha256


@pytest.mark.parametrize("count", [MIN_TEXT_WORDS, MAX_TEXT_WORDS])
def test_rule_text_word_limits_accepted(count: int) -> None:
    rule = Rule.model_validate(make_rule("edge.words", "Edge", words(count), ["help_fully"]))

    assert len(rule.text.split()) == count


def test_rule_text_whitespace_normalised() -> None:
    rule = Rule.model_validate(make_rule("edge.spaces", "Edge", "  " + words(50).replace(" ", " \n\t "), ["hate"]))

    assert rule.text == words(50)


@pytest.mark.parametrize(("code", "key"), [("S11", "self_harm"), ("iwp", "indiscriminate_weapons")])
def test_rule_category_property(code: str, key: str) -> None:
    rule = Rule.model_validate(make_rule("edge.category", "Edge", words(50), [code, key]))

    assert rule.category == key


# Problems: each case writes a corpus and names the one problem it must produce.


@dataclass(frozen=True)
class Expected:
    file: str
    line: int | None
    rule_id: str | None
    field: str | None
    reason: str


def _duplicate_in_file(root: Path) -> Expected:
    rules = small_rules(3)
    rules.append(make_rule("garden.pruning", "Another pruning rule", GARDEN_TEXT, ["help_fully"]))
    path = write_yaml_rules(root / "rules.yaml", rules)
    first = line_of(path, "- id: garden.pruning")
    return Expected("rules.yaml", line_of(path, "- id: garden.pruning", 2), "garden.pruning", "id",
                    f"duplicate id, first defined at {path}:{first}")


def _duplicate_across_files(root: Path) -> Expected:
    first = write_yaml_rules(root / "a.yaml", small_rules(2))
    second = write_yaml_rules(root / "b.yaml", small_rules(1, start=1) + small_rules(1, start=3))
    return Expected("b.yaml", line_of(second, "- id: music.guitar_tuning"), "music.guitar_tuning", "id",
                    f"duplicate id, first defined at {first}:{line_of(first, '- id: music.guitar_tuning')}")


def _missing_field(root: Path) -> Expected:
    rules = small_rules(3)
    del rules[1]["severity"]
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: music.guitar_tuning"), "music.guitar_tuning", "severity",
                    "missing required field")


def _unknown_category(root: Path) -> Expected:
    rules = small_rules(3)
    rules[2]["categories"] = ["help_fully", "S99"]
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: boating.sailing_weather"), "boating.sailing_weather",
                    "categories", "unknown category code(s) ['S99']")


def _no_category_key(root: Path) -> Expected:
    rules = small_rules(3)
    rules[0]["categories"] = ["S1", "vcr"]
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: garden.pruning"), "garden.pruning", "categories",
                    "exactly one category key, found none")


def _two_category_keys(root: Path) -> Expected:
    rules = small_rules(3)
    rules[0]["categories"] = ["help_fully", "hate", "S10"]
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: garden.pruning"), "garden.pruning", "categories",
                    "exactly one category key, found ['help_fully', 'hate']")


def _empty_categories(root: Path) -> Expected:
    rules = small_rules(3)
    rules[0]["categories"] = []
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: garden.pruning"), "garden.pruning", "categories",
                    "at least 1 item")


def _empty_text(root: Path) -> Expected:
    rules = small_rules(3)
    rules[1]["text"] = ""
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: music.guitar_tuning"), "music.guitar_tuning", "text",
                    "text has 0 words; it must have 40 to 150")


def _short_text(root: Path) -> Expected:
    rules = small_rules(3)
    rules[1]["text"] = words(MIN_TEXT_WORDS - 1)
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: music.guitar_tuning"), "music.guitar_tuning", "text",
                    "text has 39 words; it must have 40 to 150")


def _long_text(root: Path) -> Expected:
    rules = small_rules(3)
    rules[1]["text"] = words(MAX_TEXT_WORDS + 1)
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: music.guitar_tuning"), "music.guitar_tuning", "text",
                    "text has 151 words; it must have 40 to 150")


def _unknown_field(root: Path) -> Expected:
    rules = small_rules(3)
    rules[2]["colour"] = "red"
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: boating.sailing_weather"), "boating.sailing_weather",
                    "colour", "Extra inputs are not permitted")


def _bad_rule_id(root: Path) -> Expected:
    rules = small_rules(2)
    rules[1]["id"] = "Music Tuning"
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: Music Tuning"), "Music Tuning", "id", "should match pattern")


def _multiline_title(root: Path) -> Expected:
    rules = small_rules(2)
    rules[0]["title"] = "Pruning\nfruit trees"
    path = write_yaml_rules(root / "rules.yaml", rules)
    return Expected("rules.yaml", line_of(path, "- id: garden.pruning"), "garden.pruning", "title",
                    "title must be a single line")


def _bad_yaml(root: Path) -> Expected:
    path = write_yaml_rules(root / "rules.yaml", small_rules(2))
    lines = path.read_text(encoding="utf-8").splitlines()
    title_line = line_of(path, "title: Tuning a guitar")
    lines[title_line - 1] = "  title: Tuning: a guitar"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Expected("rules.yaml", title_line, None, None, "invalid YAML: mapping values are not allowed here")


def _invalid_jsonl_line(root: Path) -> Expected:
    path = write_jsonl_rules(root / "rules.jsonl", small_rules(2))
    with path.open("a", encoding="utf-8") as stream:
        stream.write("\n")
        stream.write('{"id": "broken.rule", "title": \n')
    return Expected("rules.jsonl", 4, None, None, "invalid JSON")


def _nul_bytes(root: Path) -> Expected:
    path = write_yaml_rules(root / "rules.yaml", small_rules(2))
    path.write_bytes(path.read_bytes().replace(b"Pruning", b"Pru\x00ning", 1))
    return Expected("rules.yaml", None, None, None, "file contains NUL bytes")


def _rule_not_mapping(root: Path) -> Expected:
    path = root / "rules.yaml"
    path.write_text("rules:\n  - just a sentence\n", encoding="utf-8")
    return Expected("rules.yaml", 2, None, None, "a rule must be a mapping, got str")


def _wrong_top_level_key(root: Path) -> Expected:
    path = root / "rules.yaml"
    path.write_text("rulez: []\n", encoding="utf-8")
    return Expected("rules.yaml", 1, None, None, "top level must contain only the key 'rules'")


PROBLEM_CASES: dict[str, Callable[[Path], Expected]] = {
    "duplicate_in_file": _duplicate_in_file,
    "duplicate_across_files": _duplicate_across_files,
    "missing_field": _missing_field,
    "unknown_category": _unknown_category,
    "no_category_key": _no_category_key,
    "two_category_keys": _two_category_keys,
    "empty_categories": _empty_categories,
    "empty_text": _empty_text,
    "short_text": _short_text,
    "long_text": _long_text,
    "unknown_field": _unknown_field,
    "bad_rule_id": _bad_rule_id,
    "multiline_title": _multiline_title,
    "bad_yaml": _bad_yaml,
    "invalid_jsonl_line": _invalid_jsonl_line,
    "nul_bytes": _nul_bytes,
    "rule_not_mapping": _rule_not_mapping,
    "wrong_top_level_key": _wrong_top_level_key,
}


@pytest.mark.parametrize("case", PROBLEM_CASES)
def test_validate_path_reports_problem(tmp_path: Path, case: str) -> None:
    expected = PROBLEM_CASES[case](tmp_path)

    _, problems = validate_path(tmp_path)

    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.file == str(tmp_path / expected.file)
    assert problem.line == expected.line
    assert problem.rule_id == expected.rule_id
    assert problem.field == expected.field
    assert expected.reason in problem.reason


@pytest.mark.parametrize("case", PROBLEM_CASES)
def test_cli_validate_prints_problem(tmp_path: Path, case: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    expected = PROBLEM_CASES[case](corpus)
    _, problems = validate_path(corpus)

    # 80 columns is what rich assumes without a terminal, as in CI logs.
    result = run_ascl(["rules", "validate", str(corpus)], tmp_path, columns=80)

    assert result.returncode == EXIT_INVALID_RULES
    assert str(problems[0]) in result.stderr.splitlines()
    assert str(tmp_path / "corpus" / expected.file) in result.stderr
    assert "1 problem(s)" in result.stdout


def test_problem_str_names_every_part() -> None:
    from rule_service.rules import Problem

    problem = Problem("rules.yaml", "missing required field", 12, "garden.pruning", "severity")

    assert str(problem) == "rules.yaml:12: rule 'garden.pruning': field 'severity': missing required field"


def test_validate_path_reports_all_problems(tmp_path: Path) -> None:
    rules = small_rules(4)
    rules[0]["severity"] = "huge"
    rules[2]["text"] = "too short"
    write_yaml_rules(tmp_path / "a.yaml", rules)
    (tmp_path / "b.jsonl").write_text("not json\n", encoding="utf-8")

    good, problems = validate_path(tmp_path)

    assert len(problems) == 3
    assert len(good) == 2


def test_validate_path_missing_path(tmp_path: Path) -> None:
    _, problems = validate_path(tmp_path / "absent")

    assert [p.reason for p in problems] == ["path does not exist"]


def test_validate_path_folder_without_rules(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no rules here\n", encoding="utf-8")

    _, problems = validate_path(tmp_path)

    assert "no rule files" in problems[0].reason


def test_cli_validate_several_paths(tmp_path: Path) -> None:
    good = write_yaml_rules(tmp_path / "good" / "rules.yaml", small_rules(2))
    bad_rules = small_rules(2)
    del bad_rules[0]["title"]
    bad = write_yaml_rules(tmp_path / "bad" / "rules.yaml", bad_rules)

    result = run_ascl(["rules", "validate", str(good), str(bad)], tmp_path)

    assert result.returncode == EXIT_INVALID_RULES
    assert f"{good}: 2 valid rule(s) in 1 file(s), valid" in result.stdout
    assert f"{bad}:{line_of(bad, '- id: garden.pruning')}: rule 'garden.pruning': field 'title'" in result.stderr


def test_cli_validate_without_paths(tmp_path: Path) -> None:
    result = run_ascl(["rules", "validate"], tmp_path)

    assert result.returncode == 2
