"""Rule builders and small corpora for the rule service tests.

Each small corpus has a few rules on clearly separate topics, so a plain
query has one obvious best rule even for a tiny index.
"""

import json
from pathlib import Path
from typing import Any

import yaml

GARDEN_TEXT = (
    "When someone asks how to prune apple, pear or plum trees, explain that most fruit trees are pruned in "
    "late winter while they are dormant. Remove dead, damaged and crossing branches first, then thin the "
    "crown so light reaches the centre. Cut just above an outward-facing bud with clean, sharp secateurs, "
    "and never remove more than a quarter of the canopy in one year."
)
GUITAR_TEXT = (
    "When someone asks how to tune a guitar, explain standard tuning from the lowest string to the highest: "
    "E, A, D, G, B and E. Suggest a clip-on electronic tuner or a tuning app for beginners, and describe "
    "tuning by ear with the fifth-fret method for players who want to train their hearing. Remind them "
    "that new strings stretch and need retuning several times."
)
SAILING_TEXT = (
    "When someone plans a sailing trip, tell them to check the marine weather forecast, wind strength, "
    "gusts, wave height and tide times before leaving the harbour. Advise reefing the mainsail early when "
    "the wind rises, wearing a life jacket at all times on deck, and filing a float plan with someone on "
    "shore. Small boats should return to port when a storm warning is issued."
)
TELESCOPE_TEXT = (
    "When someone asks which telescope to buy for stargazing, explain the difference between refractors, "
    "reflectors and compound telescopes, and that aperture matters more than magnification. Recommend a "
    "stable mount, a dark site away from city lights, and letting the eyes adapt to the dark for twenty "
    "minutes. The Moon, Jupiter and Saturn are good first targets for a beginner."
)
BUDGET_TEXT = (
    "When someone asks how to make a household budget, suggest listing monthly income after tax, then "
    "fixed costs such as rent and insurance, then variable spending such as groceries and travel. Explain "
    "the fifty-thirty-twenty guideline as a starting point, recommend an emergency fund of three to six "
    "months of expenses, and suggest reviewing the budget every month."
)
BREAD_TEXT = (
    "When someone asks how to bake bread at home, explain that flour, water, salt and yeast are all a basic "
    "loaf needs. Describe kneading until the dough is smooth and elastic, letting it rise until doubled, "
    "shaping it, a second shorter rise, and baking in a very hot oven. A loaf is done when it sounds hollow "
    "when tapped underneath."
)

# Each entry: rule id, title, text, category codes, and a query whose best rule it is.
SMALL_RULES: tuple[tuple[str, str, str, list[str], str], ...] = (
    ("garden.pruning", "Pruning fruit trees", GARDEN_TEXT, ["help_fully"], "when should I prune my apple tree"),
    ("music.guitar_tuning", "Tuning a guitar", GUITAR_TEXT, ["help_fully"], "how do I tune my guitar strings"),
    ("boating.sailing_weather", "Weather checks before sailing", SAILING_TEXT, ["violent_crimes", "S1"],
     "is it safe to sail when the wind is strong"),
    ("astronomy.telescopes", "Choosing a telescope", TELESCOPE_TEXT, ["self_harm", "ssh"],
     "which telescope should I buy to see Saturn"),
    ("money.budgeting", "Making a household budget", BUDGET_TEXT, ["specialized_advice", "S6", "spc_fin"],
     "how do I plan my monthly spending"),
    ("kitchen.bread", "Baking bread at home", BREAD_TEXT, ["adversarial"], "how long should bread dough rise"),
)


def make_rule(rule_id: str, title: str, text: str, categories: list[str], **overrides: Any) -> dict[str, Any]:
    """Build a raw rule record as it appears in a rule file; `overrides` replace or add fields."""
    record: dict[str, Any] = {
        "id": rule_id,
        "title": title,
        "text": text,
        "allowed": ["Give practical, accurate guidance."],
        "disallowed": ["Invent facts or figures."],
        "categories": list(categories),
        "severity": "low",
        "version": 1,
        "source": "tests",
    }
    record.update(overrides)
    return record


def small_rules(count: int = 4, start: int = 0) -> list[dict[str, Any]]:
    """Return `count` valid raw rules from `SMALL_RULES`, beginning at index `start`."""
    chosen = SMALL_RULES[start : start + count]
    return [make_rule(rule_id, title, text, categories) for rule_id, title, text, categories, _ in chosen]


def query_for(rule_id: str) -> str:
    """Return the query whose best rule in `SMALL_RULES` is `rule_id`."""
    return next(query for rid, _, _, _, query in SMALL_RULES if rid == rule_id)


def words(count: int) -> str:
    """Return a text of exactly `count` distinct words."""
    return " ".join(f"word{i}" for i in range(count))


def write_yaml_rules(path: Path, rules: list[dict[str, Any]]) -> Path:
    """Write `rules` as a YAML rule file with a top-level `rules` list; every rule starts on a `- id:` line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_jsonl_rules(path: Path, rules: list[dict[str, Any]]) -> Path:
    """Write `rules` as JSON Lines, one rule per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(rule) + "\n" for rule in rules), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """Return the 1-based line number of the `occurrence`-th line of `path` containing `needle`."""
    found = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            found += 1
            if found == occurrence:
                return number
    raise AssertionError(f"{needle!r} occurs fewer than {occurrence} time(s) in {path}")
