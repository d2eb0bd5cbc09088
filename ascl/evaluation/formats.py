"""Shared pieces of the public benchmark loaders: the format description, load options and record ids."""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.batch import PromptRecord
from agent.trace import PromptKind
from ascl.evaluation.tables import FormatError, Table

# Appended to reasoning prompts so that answers can be checked. The bundled
# reasoning suite uses the same instructions.
BOXED_INSTRUCTION = "Put your final answer in \\boxed{}."
CHOICE_INSTRUCTION = "End your reply with 'Answer: X', where X is the letter of the correct option."
CHOICE_LETTERS = "ABCD"


@dataclass(frozen=True)
class LoadOptions:
    """Choices that a file's columns cannot express.

    `kind` sets the kind of every OR-Bench prompt, because the benign and the
    toxic OR-Bench files have the same columns. Without it, a file whose name
    contains 'toxic' is harmful and any other is benign. `seed` changes the
    deterministic order of GPQA options. `answer_instruction` appends the
    answer-format instruction to reasoning prompts.
    """

    kind: PromptKind | None = None
    seed: int = 0
    answer_instruction: bool = True


Loader = Callable[[Table, LoadOptions], list[PromptRecord]]


@dataclass(frozen=True)
class PublicFormat:
    """One public benchmark layout: its name for `--format`, the columns that identify it and its loader."""

    name: str
    title: str
    required: frozenset[str]
    load: Loader


def row_id(prefix: str, table: Table, number: int) -> str:
    """Return an id for a row of a file without an id column: prefix, file stem and row number.

    The stem keeps the ids of two files of one format (a train and an eval
    split) apart in one suite. Renaming or reordering the file changes the ids.
    """
    return f"{prefix}-{slug(table.path)}-{number}"


def slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_") or "file"


def record(table: Table, number: int, **fields: Any) -> PromptRecord:
    """Build a `PromptRecord`; the fields come from checked cells, so a failure here is reported with the row."""
    try:
        return PromptRecord(**fields)
    except ValueError as exc:
        raise FormatError(f"{table.path} row {number}: {exc}") from None
