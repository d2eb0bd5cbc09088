"""Loaders for public reasoning benchmarks: GSM8K, MATH-500 and GPQA-style multiple choice.

Categories follow the bundled reasoning suite (`gsm`, `competition`,
`science_mc`), so a scorer can pick its answer check by category whichever
file the prompt came from. Ground truths are strings: a number for GSM8K, the
LaTeX answer for MATH-500 and a letter A to D for multiple choice.
"""

import hashlib

from agent.batch import PromptRecord
from ascl.evaluation.formats import (
    BOXED_INSTRUCTION, CHOICE_INSTRUCTION, CHOICE_LETTERS, LoadOptions, PublicFormat, record, row_id,
)
from ascl.evaluation.tables import FormatError, Table

GSM8K_SEPARATOR = "####"
GPQA_OPTION_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def load_gsm8k(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map GSM8K rows; the ground truth is the number after '####' in `answer`, without thousands separators."""
    records = []
    for number in range(1, len(table.rows) + 1):
        solution = table.required_text(number, "answer")
        if GSM8K_SEPARATOR not in solution:
            raise FormatError(
                f"{table.path} row {number}: column 'answer' has no '{GSM8K_SEPARATOR} <number>' final line"
            )
        final = solution.rsplit(GSM8K_SEPARATOR, 1)[1].strip().replace(",", "")
        if not final:
            raise FormatError(f"{table.path} row {number}: column 'answer' has nothing after '{GSM8K_SEPARATOR}'")
        records.append(record(
            table, number,
            id=row_id("gsm8k", table, number),
            prompt=_with_instruction(table.required_text(number, "question"), BOXED_INSTRUCTION, options),
            kind="reasoning",
            category="gsm",
            ground_truth=final,
        ))
    return records


def load_math500(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map MATH-500 rows; `answer` is the ground truth and `unique_id` (a path such as test/algebra/1.json) the id."""
    records = []
    for number in range(1, len(table.rows) + 1):
        unique_id = table.text(number, "unique_id")
        records.append(record(
            table, number,
            id=f"math500-{unique_id}" if unique_id else row_id("math500", table, number),
            prompt=_with_instruction(table.required_text(number, "problem"), BOXED_INSTRUCTION, options),
            kind="reasoning",
            category="competition",
            ground_truth=table.required_text(number, "answer"),
        ))
    return records


def load_gpqa(table: Table, options: LoadOptions) -> list[PromptRecord]:
    """Map GPQA rows to four lettered options in a seeded order; the ground truth is the correct letter."""
    records = []
    for number in range(1, len(table.rows) + 1):
        question = table.required_text(number, "Question")
        answers = [table.required_text(number, column) for column in GPQA_OPTION_COLUMNS]
        record_id = table.text(number, "Record ID")
        order = option_order(record_id or question, options.seed)
        lines = "\n".join(f"{letter}) {answers[index]}" for letter, index in zip(CHOICE_LETTERS, order))
        records.append(record(
            table, number,
            id=f"gpqa-{record_id}" if record_id else row_id("gpqa", table, number),
            prompt=_with_instruction(f"{question}\n\n{lines}", CHOICE_INSTRUCTION, options, separator="\n\n"),
            kind="reasoning",
            category="science_mc",
            ground_truth=CHOICE_LETTERS[order.index(0)],
        ))
    return records


def option_order(key: str, seed: int) -> list[int]:
    """Return a permutation of the four answer columns (0 is the correct one) fixed by `key` and `seed`.

    A SHA-256 of seed, key and column index sorts the columns, so the order is
    the same on every machine and Python version, unlike `hash()` or `random`.
    """
    def rank(index: int) -> str:
        return hashlib.sha256(f"{seed}\x00{key}\x00{index}".encode()).hexdigest()

    return sorted(range(len(GPQA_OPTION_COLUMNS)), key=rank)


def _with_instruction(text: str, instruction: str, options: LoadOptions, separator: str = " ") -> str:
    return f"{text}{separator}{instruction}" if options.answer_instruction else text


REASONING_FORMATS: tuple[PublicFormat, ...] = (
    PublicFormat("gsm8k", "GSM8K", frozenset({"question", "answer"}), load_gsm8k),
    PublicFormat("math500", "MATH-500", frozenset({"problem", "answer"}), load_math500),
    PublicFormat("gpqa", "GPQA", frozenset({"Question", *GPQA_OPTION_COLUMNS}), load_gpqa),
)
