"""Loaders for public safety benchmarks: XSTest, StrongREJECT, HarmBench, AILuminate, WildJailbreak and OR-Bench.

Each loader maps the benchmark's hazard names onto our category keys where
both mean the same harm. Where no key fits (HarmBench `illegal`, StrongREJECT
'Disinformation and deception'), the benchmark's own name is the category, so
per-category reports still keep those prompts apart.
"""

from agent.batch import PromptRecord
from agent.trace import PromptKind
from ascl.evaluation.formats import LoadOptions, PublicFormat, record, row_id
from ascl.evaluation.tables import FormatError, Table
from rule_service.categories import CATEGORIES

# AILuminate hazard ids (vcr, spc_hlt, ...) to our keys, from the table every rule carries.
AILUMINATE_CATEGORIES: dict[str, str] = {hazard: c.key for c in CATEGORIES for hazard in c.hazards}

# HarmBench SemanticCategory values with a clear counterpart. `illegal`,
# `harmful`, `harassment_bullying` and `misinformation_disinformation` span
# several of our categories and stay as they are.
HARMBENCH_CATEGORIES: dict[str, str] = {
    "chemical_biological": "indiscriminate_weapons",
    "copyright": "intellectual_property",
    "cybercrime_intrusion": "nonviolent_crimes",
}

# StrongREJECT categories, compared in lower case because upstream files spell
# 'Disinformation and deception' with both capitalisations.
STRONGREJECT_CATEGORIES: dict[str, str] = {
    "hate, harassment and discrimination": "hate",
    "illegal goods and services": "nonviolent_crimes",
    "non-violent crimes": "nonviolent_crimes",
    "sexual content": "sexual_content",
    "violence": "violent_crimes",
}

# NOTE: these OR-Bench category names were not checked against a released file.
# A name that matches none of them is kept as it is.
ORBENCH_CATEGORIES: dict[str, str] = {
    "hate": "hate",
    "privacy": "privacy",
    "self-harm": "self_harm",
    "sexual": "sexual_content",
    "violence": "violent_crimes",
}

WILDJAILBREAK_KINDS: dict[str, PromptKind] = {
    "vanilla_harmful": "harmful",
    "adversarial_harmful": "harmful",
    "vanilla_benign": "benign",
    "adversarial_benign": "benign",
}
XSTEST_KINDS: dict[str, PromptKind] = {"safe": "benign", "unsafe": "harmful"}


def load_xstest(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map XSTest rows: label safe to benign and unsafe to harmful; `type` (homonyms, ...) is the category."""
    records = []
    for number in range(1, len(table.rows) + 1):
        label = _choice(table, number, "label", XSTEST_KINDS)
        identifier = table.text(number, "id")
        records.append(record(
            table, number,
            id=f"xstest-{identifier}" if identifier else row_id("xstest", table, number),
            prompt=table.required_text(number, "prompt"),
            kind=XSTEST_KINDS[label],
            category=table.required_text(number, "type"),
        ))
    return records


def load_strongreject(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map StrongREJECT rows: every `forbidden_prompt` is harmful."""
    records = []
    for number in range(1, len(table.rows) + 1):
        category = table.required_text(number, "category")
        records.append(record(
            table, number,
            id=row_id("strongreject", table, number),
            prompt=table.required_text(number, "forbidden_prompt"),
            kind="harmful",
            category=STRONGREJECT_CATEGORIES.get(category.lower(), category),
        ))
    return records


def load_harmbench(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map HarmBench text behaviours; a contextual behaviour is sent as its context, a '---' line, then the request."""
    if "ImageFileName" in table.columns:
        raise FormatError(f"{table.path}: multimodal HarmBench behaviours need images; use the text behaviours file")
    records = []
    for number in range(1, len(table.rows) + 1):
        behavior = table.required_text(number, "Behavior")
        context = table.text(number, "ContextString")
        semantic = table.required_text(number, "SemanticCategory")
        if table.text(number, "FunctionalCategory").lower() == "copyright":
            semantic = "copyright"
        records.append(record(
            table, number,
            id=f"harmbench-{table.required_text(number, 'BehaviorID')}",
            # HarmBench's own test cases join context and behaviour with this separator.
            prompt=f"{context}\n\n---\n\n{behavior}" if context else behavior,
            kind="harmful",
            category=HARMBENCH_CATEGORIES.get(semantic, semantic),
        ))
    return records


def load_ailuminate(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map AILuminate prompt rows; every prompt is harmful and its `hazard` id becomes our category key."""
    records = []
    for number in range(1, len(table.rows) + 1):
        hazard = table.required_text(number, "hazard").lower()
        records.append(record(
            table, number,
            id=f"ailuminate-{table.required_text(number, 'release_prompt_id')}",
            prompt=table.required_text(number, "prompt_text"),
            kind="harmful",
            category=AILUMINATE_CATEGORIES.get(hazard, hazard),
        ))
    return records


def load_wildjailbreak(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map WildJailbreak rows: `data_type` gives the kind and the category; vanilla rows use `vanilla`."""
    records = []
    for number in range(1, len(table.rows) + 1):
        data_type = _choice(table, number, "data_type", WILDJAILBREAK_KINDS)
        column = "adversarial" if data_type.startswith("adversarial") else "vanilla"
        if column not in table.columns:
            raise FormatError(f"{table.path} row {number}: data_type {data_type!r} needs the missing column {column!r}")
        records.append(record(
            table, number,
            id=row_id("wildjailbreak", table, number),
            prompt=table.required_text(number, column),
            kind=WILDJAILBREAK_KINDS[data_type],
            category=data_type,
        ))
    return records


def load_orbench(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map OR-Bench rows; the kind comes from `options.kind`, else from the file name (toxic files are harmful)."""
    kind: PromptKind = options.kind or ("harmful" if "toxic" in table.path.name.lower() else "benign")
    records = []
    for number in range(1, len(table.rows) + 1):
        category = table.required_text(number, "category")
        records.append(record(
            table, number,
            id=row_id("orbench", table, number),
            prompt=table.required_text(number, "prompt"),
            kind=kind,
            category=ORBENCH_CATEGORIES.get(category.lower(), category),
        ))
    return records


def _choice(table: Table, number: int, column: str, allowed: dict[str, PromptKind]) -> str:
    value = table.required_text(number, column).lower()
    if value not in allowed:
        raise FormatError(
            f"{table.path} row {number}: column {column!r} is {value!r}; expected one of {sorted(allowed)}"
        )
    return value


SAFETY_FORMATS: tuple[PublicFormat, ...] = (
    PublicFormat("xstest", "XSTest", frozenset({"prompt", "type", "label"}), load_xstest),
    PublicFormat("strongreject", "StrongREJECT",
                 frozenset({"category", "source", "forbidden_prompt"}), load_strongreject),
    PublicFormat("harmbench", "HarmBench",
                 frozenset({"Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID"}), load_harmbench),
    PublicFormat("ailuminate", "AILuminate",
                 frozenset({"release_prompt_id", "prompt_text", "hazard"}), load_ailuminate),
    PublicFormat("wildjailbreak", "WildJailbreak", frozenset({"adversarial", "data_type"}), load_wildjailbreak),
    PublicFormat("orbench", "OR-Bench", frozenset({"prompt", "category"}), load_orbench),
)
