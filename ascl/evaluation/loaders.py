"""Load a prompt file in our own format or in a public benchmark's, chosen by name or by its columns.

Formats, with the columns that identify them:

| name | benchmark | columns |
| --- | --- | --- |
| `ascl` | our prompt file (JSON Lines) | id, prompt or messages, kind, category, ground_truth |
| `xstest` | XSTest | prompt, type, label (safe/unsafe); id when present |
| `strongreject` | StrongREJECT | category, source, forbidden_prompt |
| `harmbench` | HarmBench text behaviours | Behavior, FunctionalCategory, SemanticCategory, BehaviorID; ContextString |
| `ailuminate` | MLCommons AILuminate prompts | release_prompt_id, prompt_text, hazard |
| `wildjailbreak` | WildJailbreak train or eval | adversarial, data_type; vanilla |
| `orbench` | OR-Bench (80k, hard-1k, toxic) | prompt, category |
| `gsm8k` | GSM8K | question, answer ("... #### N") |
| `math500` | MATH-500 | problem, answer; unique_id |
| `gpqa` | GPQA | Question, Correct Answer, Incorrect Answer 1..3; Record ID |

Without a format name, a JSON Lines file whose keys are all prompt-record
fields is our format; any other file takes the public format whose required
columns it has, the one with the most required columns when several fit.
"""

import logging
from pathlib import Path

from agent.batch import PromptRecord, load_prompts
from ascl.evaluation.formats import LoadOptions, PublicFormat
from ascl.evaluation.reasoning_formats import REASONING_FORMATS
from ascl.evaluation.safety_formats import SAFETY_FORMATS
from ascl.evaluation.tables import FormatError, Table, read_table

logger = logging.getLogger(__name__)

NATIVE_FORMAT = "ascl"
PUBLIC_FORMATS: dict[str, PublicFormat] = {f.name: f for f in (*SAFETY_FORMATS, *REASONING_FORMATS)}
FORMAT_NAMES: tuple[str, ...] = (NATIVE_FORMAT, *PUBLIC_FORMATS)


def load_prompt_file(path: str | Path, format: str | None = None,
                     options: LoadOptions | None = None) -> list[PromptRecord]:
    """Load one prompt file as prompt records; `format` is a name from `FORMAT_NAMES`, or None to detect it.

    Raises `FormatError` for an unknown format, missing columns, invalid
    values or repeated ids. An invalid file in our format raises
    `agent.batch.BatchError`. Both are `ValueError`s whose message names the file.
    """
    path = Path(path)
    options = options or LoadOptions()
    if format is not None and format not in FORMAT_NAMES:
        raise FormatError(f"{path}: unknown format {format!r}; expected one of {list(FORMAT_NAMES)}")
    if format == NATIVE_FORMAT:
        return _load_native(path)
    table = read_table(path)
    if format is None:
        if _looks_native(table):
            return _load_native(path)
        chosen = sniff_format(table)
    else:
        chosen = PUBLIC_FORMATS[format]
        table.require(chosen.required, chosen.title)
    records = chosen.load(table, options)
    _check_unique(table, records)
    logger.info("loaded %d prompts from %s as %s", len(records), path, chosen.name)
    return records


def sniff_format(table: Table) -> PublicFormat:
    """Return the public format whose required columns the table has; raise `FormatError` when none or several fit."""
    columns = set(table.columns)
    fitting = [f for f in PUBLIC_FORMATS.values() if f.required <= columns]
    if not fitting:
        closest = max(PUBLIC_FORMATS.values(), key=lambda f: len(f.required & columns) / len(f.required))
        missing = sorted(closest.required - columns)
        raise FormatError(
            f"{table.path}: columns {table.columns} match no known format; the closest, {closest.name} "
            f"({closest.title}), lacks {missing}. Name the format with --format, one of {list(FORMAT_NAMES)}"
        )
    widest = max(len(f.required) for f in fitting)
    best = [f for f in fitting if len(f.required) == widest]
    if len(best) > 1:
        names = [f.name for f in best]
        raise FormatError(f"{table.path}: the columns fit several formats {names}; name one with --format")
    return best[0]


def _looks_native(table: Table) -> bool:
    fields = set(PromptRecord.model_fields)
    return table.path.suffix.lower() == ".jsonl" and "id" in table.columns and set(table.columns) <= fields


def _load_native(path: Path) -> list[PromptRecord]:
    records = load_prompts(path)
    logger.info("loaded %d prompts from %s as %s", len(records), path, NATIVE_FORMAT)
    return records


def _check_unique(table: Table, records: list[PromptRecord]) -> None:
    # Loaders emit one record per row in row order, so the list index gives the row number.
    first_row: dict[str, int] = {}
    for number, prompt in enumerate(records, start=1):
        if prompt.id in first_row:
            raise FormatError(
                f"{table.path} row {number}: prompt id {prompt.id!r} repeats row {first_row[prompt.id]}; "
                "ids must be unique because batch runs resume by id"
            )
        first_row[prompt.id] = number
