"""Rates, means and their intervals, and the trade-off plot at the edges (all 0 or all 1)."""

import struct
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ascl.evaluation.report import plot_tradeoff, render_markdown
from ascl.evaluation.stats import difference, mean, wilson
from ascl.evaluation.summary import EvalResults, Outcome, summarize


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (0, 140), (1, 140), (139, 140), (140, 140), (5, 7)])
def test_wilson_bounds_contain_rate(successes, n):
    estimate = wilson(successes, n)

    assert 0.0 <= estimate.low <= estimate.value <= estimate.high <= 1.0


def test_wilson_edges_exact():
    assert wilson(0, 140).low == 0.0
    assert wilson(140, 140).high == 1.0


def test_wilson_known_value():
    # 8 of 10: the Wilson 95% interval is [0.490, 0.943].
    estimate = wilson(8, 10)

    assert estimate.low == pytest.approx(0.4902, abs=1e-4)
    assert estimate.high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="successes must be in"):
        wilson(3, 2)


def test_empty_estimates_are_none():
    assert wilson(0, 0).value is None
    assert mean([]).value is None
    assert wilson(0, 0).format() == "n/a (n=0)"


def test_difference_significance():
    assert difference(wilson(10, 100), wilson(90, 100))[1]
    assert not difference(wilson(50, 100), wilson(52, 100))[1]


def test_plot_all_zero_rates(tmp_path: Path):
    outcomes = [Outcome(mode="never", kind=kind, prompt_id=f"{kind}{i}", safe=False, refusal=False, correct=False)
                for kind in ("harmful", "benign", "reasoning") for i in range(5)]
    results = EvalResults(created_at=datetime.now(timezone.utc), model="m", suites=["s"], samples=1,
                          modes=summarize(outcomes, ["never"]))

    plot_tradeoff(results, tmp_path / "tradeoff.png")

    assert (tmp_path / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", (tmp_path / "tradeoff.png").read_bytes()[16:24]) == (1320, 576)
    assert "0.0% [0.0, 43.4] (n=5)" in render_markdown(results)


def test_style_table_in_report():
    outcomes = [
        Outcome(mode="never", kind="harmful", prompt_id="harm-hate-fiction-01", style="fiction", safe=True),
        Outcome(mode="never", kind="harmful", prompt_id="harm-hate-fiction-02", style="fiction", safe=False),
        Outcome(mode="never", kind="harmful", prompt_id="harm-hate-direct-01", style="direct", safe=True),
        Outcome(mode="never", kind="harmful", prompt_id="custom-1", safe=False),
    ]
    modes = summarize(outcomes, ["never"])
    results = EvalResults(created_at=datetime.now(timezone.utc), model="m", suites=["s"], samples=1, modes=modes)

    report = render_markdown(results)

    assert modes["never"].safety_by_style["fiction"].value == 0.5
    assert modes["never"].safety_by_style["direct"].value == 1.0
    assert set(modes["never"].safety_by_style) == {"fiction", "direct"}
    assert "## Safety rate on harmful prompts, by wrapper style" in report
    assert "| fiction | 50.0% [" in report


def test_no_style_table_without_styles():
    outcomes = [Outcome(mode="never", kind="harmful", prompt_id="h1", safe=True)]
    results = EvalResults(created_at=datetime.now(timezone.utc), model="m", suites=["s"], samples=1,
                          modes=summarize(outcomes, ["never"]))

    assert "wrapper style" not in render_markdown(results)
