"""Answer checking for reasoning prompts: final-answer extraction, math-verify, multiple-choice letters.

The final answer of a response is, in order of preference, the last
`\\boxed{...}`, the text after the last "Answer:" (or "answer is"), or the last
number. Numeric and symbolic answers are compared with math-verify
(`parse` and `verify`, so `\\frac{1}{2}` equals `0.5` and `x=3` equals `3`).
A ground truth that is a single letter A to J is a multiple-choice answer
and is compared by letter ("Answer: C", "(C)", "\\boxed{C}", "C." all give C).
A list ground truth accepts any of its items.
"""

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from math_verify import parse, verify


class _DropDisabledTimeoutWarning(logging.Filter):
    """Filter out math-verify's warning, logged on every call, that its time-out is off.

    The time-out is turned off on purpose outside the main thread (see `_verify_options`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropDisabledTimeoutWarning())

CHOICE_LETTERS = "ABCDEFGHIJ"
# Upper case only: a lower-case "e" or "i" ground truth is a number, not a choice.
_CHOICE_GOLD = re.compile(rf"^\s*\(?([{CHOICE_LETTERS}])\)?[.:]?\s*$")
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LETTER_PATTERNS = [
    re.compile(rf"\\boxed\{{\s*\(?([{CHOICE_LETTERS}])\)?\s*\}}"),
    re.compile(rf"(?i:final answer|answer)\s*(?:is|:)\s*[:*]*\s*\(?([{CHOICE_LETTERS}])\b"),
    re.compile(rf"\(([{CHOICE_LETTERS}])\)"),
    re.compile(rf"(?m)^\s*\**([{CHOICE_LETTERS}])[.):]?\**\s*$"),
]


@dataclass
class AnswerCheck:
    """The outcome of checking one answer: correct or not, what was extracted and how it was compared."""

    correct: bool
    method: str  # "math_verify" or "choice"
    extracted: str | None
    error: str | None = None


def last_boxed(text: str) -> str | None:
    """Return the contents of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced, or None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    position = text.index("{", start) + 1
    depth = 1
    for index in range(position, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[position:index].strip()
    return None  # an unclosed box: the response was cut off


def extract_final_answer(text: str) -> str | None:
    """Return the final answer of a response: last boxed, else after the last "Answer:", else the last number."""
    boxed = last_boxed(text)
    if boxed:
        return boxed
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1].strip(" \t*:$").rstrip(".").strip(" *$") or None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_choice(text: str) -> str | None:
    """Return the multiple-choice letter a response picks, upper-case, or None."""
    for pattern in _LETTER_PATTERNS:
        found = pattern.findall(text)
        if found:
            return found[-1].upper()
    return None


def _verify_options() -> tuple[dict[str, Any], dict[str, Any]]:
    # math-verify times out with signal.alarm, which works only in the main thread.
    # NOTE: in other threads an answer that sympy cannot finish simplifying blocks that thread.
    if threading.current_thread() is threading.main_thread():
        return {}, {}
    return {"parsing_timeout": None}, {"timeout_seconds": None}


def _parse_math(text: str) -> list[Any]:
    """Parse a bare answer ("1+x^2", "\\frac12", "x=3") with math-verify.

    Inside a box the whole text is read as one LaTeX expression; a plain
    `parse("1+x^2")` would stop at the first number.
    """
    parse_options, _ = _verify_options()
    bare = text.strip().strip("$").strip()
    return parse(f"\\boxed{{{bare}}}", **parse_options) or parse(bare, **parse_options)


def check_math(response: str, gold: str) -> AnswerCheck:
    """Compare a response's final answer with a numeric or symbolic ground truth using math-verify."""
    extracted = extract_final_answer(response)
    if extracted is None:
        return AnswerCheck(False, "math_verify", None, "no final answer found in the response")
    gold_parsed = _parse_math(gold)
    if not gold_parsed:
        return AnswerCheck(False, "math_verify", extracted, f"math-verify cannot parse the ground truth {gold!r}")
    answer_parsed = _parse_math(extracted)
    if not answer_parsed:
        return AnswerCheck(False, "math_verify", extracted, "math-verify cannot parse the extracted answer")
    _, verify_options = _verify_options()
    return AnswerCheck(bool(verify(gold_parsed, answer_parsed, **verify_options)), "math_verify", extracted)


def check_choice(response: str, gold_letter: str) -> AnswerCheck:
    """Compare the letter a response picks with a multiple-choice ground truth."""
    picked = extract_choice(response)
    if picked is None:
        return AnswerCheck(False, "choice", None, "no choice letter found in the response")
    return AnswerCheck(picked == gold_letter.upper(), "choice", picked)


def check_answer(response: str, ground_truth: Any) -> AnswerCheck:
    """Check a response against a ground truth: a letter, a number, a LaTeX or plain expression, or a list of them.

    Raises ValueError for a ground truth of another type (a dict, say) or an empty one.
    """
    if isinstance(ground_truth, list):
        if not ground_truth:
            raise ValueError("ground_truth: is an empty list, so no response can match it")
        checks = [check_answer(response, item) for item in ground_truth]
        return next((check for check in checks if check.correct), checks[0])
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, (str, int, float)):
        kind = type(ground_truth).__name__
        raise ValueError(f"ground_truth: expected a string, a number or a list of them, got {kind}")
    gold = str(ground_truth).strip()
    if not gold:
        raise ValueError("ground_truth: is empty")
    letter = _CHOICE_GOLD.match(gold)
    if letter:
        return check_choice(response, letter.group(1))
    return check_math(response, gold)
