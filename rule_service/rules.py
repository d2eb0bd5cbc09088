"""The rule schema and the loader that validates rule files.

A rule set is a folder (or one file) of YAML or JSON Lines files. Loading is
all or nothing: every problem in every file is collected and reported
together with its file, line, rule id and field, and a set with any problem
is rejected as a whole, so a server never starts on half a corpus.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from rule_service.categories import ALL_CODES, CATEGORY_KEYS, describe_codes

RULE_FILE_SUFFIXES = (".yaml", ".yml", ".jsonl")
RULE_ID_PATTERN = r"^[a-z0-9_]+(\.[a-z0-9_]+)+$"
RULESET_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MIN_TEXT_WORDS = 40
MAX_TEXT_WORDS = 150

BehaviourItem = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class Severity(str, Enum):
    """How much harm following the disallowed side of a rule could cause."""

    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class Rule(BaseModel):
    """One self-contained policy statement that guides how a model responds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, StringConstraints(pattern=RULE_ID_PATTERN, max_length=128)]
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    text: str
    allowed: Annotated[list[BehaviourItem], Field(min_length=1, max_length=12)]
    disallowed: Annotated[list[BehaviourItem], Field(min_length=1, max_length=12)]
    categories: Annotated[list[str], Field(min_length=1, max_length=8)]
    severity: Severity
    version: Annotated[int, Field(ge=1)]
    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]

    @field_validator("title")
    @classmethod
    def _title_is_one_line(cls, value: str) -> str:
        if "\n" in value:
            raise ValueError("title must be a single line")
        return value

    @field_validator("text")
    @classmethod
    def _text_has_word_count(cls, value: str) -> str:
        value = " ".join(value.split())
        words = len(value.split(" ")) if value else 0
        if not MIN_TEXT_WORDS <= words <= MAX_TEXT_WORDS:
            raise ValueError(
                f"text has {words} words; it must have {MIN_TEXT_WORDS} to {MAX_TEXT_WORDS}"
            )
        return value

    @field_validator("categories")
    @classmethod
    def _categories_are_known(cls, value: list[str]) -> list[str]:
        unknown = [code for code in value if code not in ALL_CODES]
        if unknown:
            raise ValueError(f"unknown category code(s) {unknown}; expected {describe_codes()}")
        keys = [code for code in value if code in CATEGORY_KEYS]
        if len(keys) != 1:
            raise ValueError(
                f"categories must contain exactly one category key, found {keys or 'none'}; "
                f"keys are {sorted(CATEGORY_KEYS)}"
            )
        return value

    @property
    def category(self) -> str:
        """Our category key, the first-class category of this rule."""
        return next(code for code in self.categories if code in CATEGORY_KEYS)

    def embedding_text(self) -> str:
        """Text that the encoder and BM25 see for this rule."""
        return f"{self.title}. {self.text}"


@dataclass(frozen=True)
class Problem:
    """One reason why a rule file was rejected."""

    file: str
    reason: str
    line: int | None = None
    rule_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.rule_id:
            parts.append(f"rule {self.rule_id!r}")
        if self.field:
            parts.append(f"field {self.field!r}")
        return ": ".join(parts) + f": {self.reason}"


class RuleSetInvalidError(ValueError):
    """A rule set failed validation; `problems` lists every reason."""

    def __init__(self, source: Path, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        listing = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"rule set {str(source)!r} is invalid ({len(problems)} problem(s)):\n{listing}")


@dataclass(frozen=True)
class RuleSet:
    """A validated, immutable list of rules with a content hash."""

    name: str
    source: Path
    rules: tuple[Rule, ...]
    sha256: str

    def by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}


def corpus_sha256(rules: tuple[Rule, ...] | list[Rule]) -> str:
    """Hash the rules' content, sorted by id, so formatting and file layout do not count."""
    canonical = [rule.model_dump(mode="json") for rule in sorted(rules, key=lambda r: r.id)]
    payload = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def rule_files(path: Path) -> list[Path]:
    """List the rule files at `path` (a file, or a folder searched recursively), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in RULE_FILE_SUFFIXES)


def load_ruleset(path: Path, name: str) -> RuleSet:
    """Load and validate every rule file at `path`; raise `RuleSetInvalidError` on any problem."""
    rules, problems = _collect(path)
    if problems:
        raise RuleSetInvalidError(path, problems)
    return RuleSet(name=name, source=path, rules=tuple(rules), sha256=corpus_sha256(rules))


def validate_path(path: Path) -> tuple[list[Rule], list[Problem]]:
    """Validate every rule file at `path` and return the good rules and all problems."""
    return _collect(path)


def _collect(path: Path) -> tuple[list[Rule], list[Problem]]:
    if not path.exists():
        return [], [Problem(file=str(path), reason="path does not exist")]
    files = rule_files(path)
    if not files:
        suffixes = ", ".join(RULE_FILE_SUFFIXES)
        return [], [Problem(file=str(path), reason=f"no rule files ({suffixes}) found")]

    rules: list[Rule] = []
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for file in files:
        for line, raw in _read_records(file, problems):
            rule = _validate_record(file, line, raw, problems)
            if rule is None:
                continue
            if rule.id in first_seen:
                problems.append(
                    Problem(str(file), f"duplicate id, first defined at {first_seen[rule.id]}", line, rule.id, "id")
                )
                continue
            first_seen[rule.id] = f"{file}:{line}"
            rules.append(rule)
    return rules, problems


def _read_records(file: Path, problems: list[Problem]) -> list[tuple[int, Any]]:
    """Parse one file into (line, raw record) pairs, appending parse problems."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(file), f"cannot read file: {exc}"))
        return []
    if "\x00" in text:
        problems.append(Problem(str(file), "file contains NUL bytes"))
        return []
    if file.suffix == ".jsonl":
        return _read_jsonl(file, text, problems)
    return _read_yaml(file, text, problems)


def _read_jsonl(file: Path, text: str, problems: list[Problem]) -> list[tuple[int, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(file), f"invalid JSON: {exc.msg} at column {exc.colno}", number))
        except RecursionError:
            problems.append(Problem(str(file), "invalid JSON: arrays or objects nested too deeply", number))
    return records


def _read_yaml(file: Path, text: str, problems: list[Problem]) -> list[tuple[int, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problems.append(Problem(str(file), f"invalid YAML: {exc.problem or exc}", line))
        return []
    except (yaml.YAMLError, RecursionError) as exc:
        problems.append(Problem(str(file), f"invalid YAML: {exc}"))
        return []

    if isinstance(data, dict):
        if set(data) != {"rules"}:
            problems.append(Problem(str(file), f"top level must contain only the key 'rules', found {sorted(map(str, data))}", 1))
            return []
        data = data["rules"]
    if not isinstance(data, list):
        problems.append(Problem(str(file), "expected a list of rules or a mapping with a 'rules' list", 1))
        return []
    return list(zip(_item_lines(root, len(data)), data, strict=True))


def _item_lines(root: yaml.Node | None, count: int) -> list[int]:
    """Return the line of each of the `count` rules in a composed YAML document.

    A duplicated `rules` key counts its last value, as the YAML loader does.
    When the rules come from elsewhere (a `<<` merge key), every rule gets the
    line of the node that holds them, or line 1.
    """
    node = root
    if isinstance(root, yaml.MappingNode):
        values = [value for key, value in root.value if key.value == "rules"]
        node = values[-1] if values else root
    if isinstance(node, yaml.SequenceNode) and len(node.value) == count:
        return [item.start_mark.line + 1 for item in node.value]
    line = node.start_mark.line + 1 if node is not None else 1
    return [line] * count


def _validate_record(file: Path, line: int, raw: Any, problems: list[Problem]) -> Rule | None:
    rule_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    if not isinstance(raw, dict):
        problems.append(Problem(str(file), f"a rule must be a mapping, got {type(raw).__name__}", line))
        return None
    try:
        return Rule.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or None
            # pydantic prefixes messages from validators with "Value error, ".
            reason = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                reason = "missing required field"
            problems.append(Problem(str(file), reason, line, rule_id, field))
        return None


def discover_rulesets(corpus_dir: Path, default_name: str) -> dict[str, Path]:
    """Map ruleset names to paths: rule files directly in `corpus_dir` form `default_name`,
    and every sub-folder holding rule files is a ruleset named after the folder."""
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {str(corpus_dir)!r} does not exist or is not a folder")
    found: dict[str, Path] = {}
    if any(p.is_file() and p.suffix in RULE_FILE_SUFFIXES for p in corpus_dir.iterdir()):
        found[default_name] = corpus_dir
        return found
    for sub in sorted(p for p in corpus_dir.iterdir() if p.is_dir()):
        if not rule_files(sub):
            continue
        if not RULESET_NAME_PATTERN.match(sub.name):
            raise ValueError(
                f"ruleset folder name {sub.name!r} is invalid; use lowercase letters, digits, '_' or '-'"
            )
        found[sub.name] = sub
    if not found:
        raise FileNotFoundError(f"no rule files found under {str(corpus_dir)!r}")
    return found
