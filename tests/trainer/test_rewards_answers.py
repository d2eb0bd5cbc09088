"""Answer correctness: final-answer extraction, math-verify comparisons and multiple-choice letters."""

import threading

import pytest

from tests.trainer.rewards_support import make_trace
from trainer.rewards import RewardUnavailable, check_answer, correctness_reward, extract_choice, extract_final_answer

MATH_CASES = [
    # (response, ground truth, expected)
    ("So the probability is \\boxed{\\frac{1}{2}}.", "0.5", True),
    ("x=3", "3", True),
    ("The root is 3.", "x=3", True),
    ("Answer: x = 3", "3", True),
    ("**Answer:** 42.", "42", True),
    ("The answer is $\\frac{3}{4}$.", "0.75", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{x^2+1}", "1+x^2", True),
    ("\\boxed{1024}", "2^{10}", True),
    ("It costs 1,000 dollars", "1000", True),
    ("I count 7 apples, 12 in total", "12", True),
    ("\\boxed{\\frac{1}{3}}", "0.5", False),
    ("x=4", "3", False),
    ("The answer is 41.", "42", False),
    ("\\boxed{3}", "$\\pi$", False),
    ("First 42, then I changed my mind: \\boxed{43}", "42", False),
]

CHOICE_CASES = [
    ("Answer: C", "C", True),
    ("The answer is (C).", "C", True),
    ("\\boxed{C}", "C", True),
    ("After weighing the options:\nC.", "C", True),
    ("**Answer:** (B)", "C", False),
    ("Answer: B", "(C)", False),
    ("The answer is a tough one, but (D)", "D", True),
]


@pytest.mark.parametrize(("response", "truth", "expected"), MATH_CASES)
def test_math(response: str, truth: str, expected: bool) -> None:
    check = check_answer(response, truth)
    assert check.method == "math_verify"
    assert check.correct is expected, check


@pytest.mark.parametrize(("response", "truth", "expected"), CHOICE_CASES)
def test_choice(response: str, truth: str, expected: bool) -> None:
    check = check_answer(response, truth)
    assert check.method == "choice"
    assert check.correct is expected, check


def test_choice_without_letter() -> None:
    check = check_answer("I am not sure.", "A")
    assert check.correct is False
    assert check.error == "no choice letter found in the response"


def test_lower_case_e_is_math() -> None:
    assert check_answer("\\boxed{e}", "e").method == "math_verify"


def test_numeric_ground_truth() -> None:
    assert check_answer("The answer is 3", 3).correct
    assert check_answer("\\boxed{0.25}", 0.25).correct


def test_list_ground_truth() -> None:
    assert check_answer("\\boxed{5}", ["4", "5"]).correct
    assert not check_answer("\\boxed{6}", ["4", "5"]).correct


def test_no_final_answer() -> None:
    check = check_answer("I do not know.", "3")
    assert check.correct is False
    assert check.error == "no final answer found in the response"


@pytest.mark.parametrize("truth", [{"value": 3}, True, "", []])
def test_bad_ground_truth(truth: object) -> None:
    with pytest.raises(ValueError, match="ground_truth"):
        check_answer("3", truth)


def test_extract_final_answer() -> None:
    assert extract_final_answer("\\boxed{\\frac{a}{b}} and more text") == "\\frac{a}{b}"
    assert extract_final_answer("Answer: $x+1$.") == "x+1"
    assert extract_final_answer("first 1, then 2.5") == "2.5"
    assert extract_final_answer("\\boxed{3") == "3"
    assert extract_final_answer("no digits at all") is None


def test_extract_choice() -> None:
    assert extract_choice("(A) is wrong, so the answer is B") == "B"
    assert extract_choice("the answer is a letter") is None


def test_correctness_reward() -> None:
    result = correctness_reward(make_trace("\\boxed{\\frac{1}{2}}", "reasoning", ground_truth="0.5"))
    assert result.score == 1.0
    assert result.details == {"method": "math_verify", "extracted": "\\frac{1}{2}"}


def test_correctness_without_truth() -> None:
    with pytest.raises(RewardUnavailable, match="no labels.ground_truth"):
        correctness_reward(make_trace("3", "reasoning"))


def test_math_verify_in_thread() -> None:
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(check_answer("\\boxed{\\frac{1}{2}}", "0.5").correct)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the main thread below)
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert errors == []
    assert results == [True]
